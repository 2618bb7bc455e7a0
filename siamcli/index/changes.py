"""What an update changes: which indexed rows stay, which go, which images are new.

Decided as git's index does: an indexed file whose path, size and modification time are
those recorded when it was embedded is not read at all; one whose size or time differ is
hashed, and counts as changed only if its content (sha256) differs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from siamcli.events import Events
from siamcli.index import vectors as vector_file
from siamcli.index.items import IndexItem, content_hash
from siamcli.index.store import LoadedIndex, Ref


@dataclass
class Changes:
    kept: list[tuple[Ref, IndexItem]]  # existing rows that stay, in index order
    removed: list[Ref]  # existing rows dropped (gone, or changed)
    paths: list[str]  # images to embed and add …
    labels: list[str]  # … and their labels
    known_hashes: dict[int, str]  # position in paths → sha256 already computed
    changed_paths: set[str]  # paths re-embedded because their content changed
    hashed: int = 0  # indexed files read because their size or time changed
    refreshed: set[Ref] = field(default_factory=set)  # kept rows whose file was touched, same content: new size/time
    gone: list[str] = field(default_factory=list)  # kept rows whose file is gone (no --prune): their paths

    @property
    def any(self) -> bool:
        return bool(self.paths or self.removed or self.refreshed)


def plan_changes(paths: list[str], labels: list[str], old: LoadedIndex | None, options, events: Events) -> Changes:
    """What an update (options: build.IndexOptions) adds and removes. An indexed file whose size
    and mtime are as recorded is not read; one touched without a change is kept with its new
    size and time (its row moves to the new segment, same id and vector), so it is read once."""
    if old is None:
        return Changes([], [], paths, labels, {}, set())
    events.stage("comparing the gallery with the index (size, time; content hash where they differ)")
    entries = old.entries
    by_path = {item.path: position for position, (_, item) in enumerate(entries)}
    drop: set[int] = set()
    refreshed: dict[int, IndexItem] = {}
    changes = Changes([], [], [], [], {}, set())
    if options.append:
        for path, label in zip(paths, labels):
            position = by_path.get(path)
            if position is not None:
                item = entries[position][1]
                info = _stat(path)
                if info is not None and (info.st_size, info.st_mtime_ns) == (item.size, item.mtime_ns):
                    continue  # already indexed and untouched since: not read
                digest = content_hash(path)
                changes.hashed += 1
                if digest == item.sha256:
                    if info is not None:  # touched or copied, same content: remember the new size and time
                        refreshed[position] = dataclasses.replace(item, size=info.st_size, mtime_ns=info.st_mtime_ns)
                    continue
                drop.add(position)  # same path, new content: the indexed image no longer exists
                changes.changed_paths.add(path)
                changes.known_hashes[len(changes.paths)] = digest
            changes.paths.append(path)
            changes.labels.append(label)
    scanned = set(paths)
    gone = [position for position, (_, item) in enumerate(entries) if item.path not in scanned and not os.path.isfile(item.path)]
    if options.prune:
        drop.update(gone)
    else:
        changes.gone = [entries[position][1].path for position in gone]  # build.py names them, with the --prune that drops them
    changes.kept = [(ref, refreshed.get(position, item)) for position, (ref, item) in enumerate(entries) if position not in drop]
    changes.removed = [entries[position][0] for position in sorted(drop)]
    changes.refreshed = {entries[position][0] for position in refreshed if position not in drop}
    return changes


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def new_rows(changes: Changes, outcome, first_id: int):
    """The new images' items, in the order their vectors were written (ids from `first_id`)."""
    for offset, position in enumerate(outcome.kept):
        yield IndexItem(id=first_id + offset, path=changes.paths[position], label=changes.labels[position],
                        sha256=outcome.sha256(position), size=int(outcome.sizes[position]), mtime_ns=int(outcome.mtimes[position]))


def copy_vectors(old: LoadedIndex | None, kept: list[tuple[Ref, IndexItem]], writer: vector_file.VectorWriter, events: Events) -> None:
    """The kept rows' vectors, in the order of `kept` (segment by segment, row order), into `writer`."""
    if old is None or not kept:
        return
    events.stage(f"copying {len(kept)} vectors")
    for position, segment in enumerate(old.segments):
        wanted = np.zeros(segment.rows, bool)
        rows = [row for (p, row), _ in kept if p == position]
        if not rows:
            continue
        wanted[rows] = True
        for chunk in segment.iter_vectors(wanted):
            writer.write(chunk)


def next_id(old: LoadedIndex | None) -> int:
    return 0 if old is None else int(old.manifest["next_id"])


