"""Atomic writes: every artifact goes to a temporary name beside its target, then is renamed.

A crash, a full disk or a kill mid-write therefore leaves either the old file or the new one,
never half of one. `os.replace` is atomic on POSIX when both names are on one file system,
which is why temporary files live in the target's own directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from siamcli.errors import UserError
from siamcli.jsonio import json_default

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success rename it onto `target`.

    `suffix` keeps the extension for writers that insist on one (Keras wants `.keras`).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get normal permissions
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; check the folder exists and is writable") from exc
    tmp_path = Path(tmp)
    if suffix:  # writers that check the extension need it last
        renamed = tmp_path.with_name(tmp_path.name[: -len(".tmp")])
        os.replace(tmp_path, renamed)
        tmp_path = renamed
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except OSError as exc:
        _remove_quietly(tmp_path)
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; free disk space or fix permissions and retry") from exc
    except BaseException:
        _remove_quietly(tmp_path)
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def write_csv(target: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(target: str | os.PathLike, figure) -> None:
    with atomic_path(target, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name, then swap it in for `target`.

    The previous `target` stays untouched until the new one is complete; it is then moved
    aside and deleted, so a failure at any point leaves one complete directory in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; free disk space or fix permissions and retry") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_directory(tmp: Path, target: Path) -> None:
    """Make a finished folder visible under its final name: its files reach the disk first, then
    one rename (`target` must not exist), then the parent's entry is synced too."""
    _fsync_tree(tmp)
    os.rename(tmp, target)
    _fsync_directory(target.parent)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            _fsync_file(path)


def _fsync_directory(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
