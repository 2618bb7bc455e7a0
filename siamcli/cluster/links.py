"""`--link-to DIR`: one folder of symbolic links per cluster; the images themselves never move.

    DIR/cluster-0000/0001-<name>   a link to the cluster's representative, then its other images,
    DIR/cluster-0000/0002-<name>   most central first (the number keeps equal names apart)
    DIR/.siamcli-clusters          marks DIR as links this command made

DIR is built beside its final name and swapped in whole (atomic_directory), so it is never
half-written. A DIR that holds anything is refused, unless --force and it is a folder this
command made (the marker, cluster folders and links only): a real file there is never deleted.
Undo: delete DIR (`rm -r DIR`): it holds only links; the originals are untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from siamcli.atomic import atomic_directory
from siamcli.cluster.summary import Cluster
from siamcli.errors import UserError

MARKER = ".siamcli-clusters"


def check_link_folder(target: Path, force: bool) -> None:
    """Refuse a --link-to DIR that may not be replaced (before any work starts)."""
    if target.exists() and not target.is_dir():
        raise UserError(f"--link-to {target} is a file; give a folder to hold one folder of links per cluster")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not _made_here(target):
        raise UserError(f"--link-to {target} is not empty and holds more than the links `siamcli cluster` makes; "
                        "choose an empty or new folder (nothing there is ever deleted)")
    if not force:
        raise UserError(f"--link-to {target} holds the links of an earlier `siamcli cluster`; pass --force to replace them, "
                        "or choose a new folder")


def write_links(target: Path, clusters: Sequence[Cluster], paths: Sequence[str]) -> int:
    """Make the folders of links (module docstring); returns the number of links."""
    width = len(str(max(len(clusters) - 1, 0)))
    made = 0
    with atomic_directory(target) as tmp:
        for cluster in clusters:
            folder = tmp / f"cluster-{cluster.id:0{max(width, 4)}d}"
            folder.mkdir()
            digits = max(4, len(str(cluster.size)))
            for rank, member in enumerate(cluster.members, start=1):
                source = os.path.abspath(paths[member])
                os.symlink(source, folder / f"{rank:0{digits}d}-{os.path.basename(source)}")
                made += 1
        (tmp / MARKER).write_text("Made by `siamcli cluster --link-to`: links only. Delete this folder to undo.\n", encoding="utf-8")
    return made


def _made_here(target: Path) -> bool:
    """True when `target` holds the marker, and otherwise only folders of links."""
    if not (target / MARKER).is_file():
        return False
    for entry in os.scandir(target):
        if entry.name == MARKER:
            continue
        if not entry.is_dir(follow_symlinks=False):
            return False
        if any(not inner.is_symlink() for inner in os.scandir(entry.path)):
            return False
    return True
