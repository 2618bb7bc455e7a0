"""One writer per index directory.

Two `siamcli index` runs on one index would each build from the same old index and the second
swap would silently drop the first one's additions. An exclusive `flock` on a lock file beside
the index directory (not inside it: the directory itself is swapped) makes the second run
refuse at once with a clear message. The kernel releases the lock when its holder exits, even
on SIGKILL, so a crashed run never leaves a stale lock behind (only its file, which the next
writer takes over).

The holder deletes the lock file when it is done, while it still holds the lock, so no
`.NAME-lock` is left beside the index. Deleting a lock file is safe only that way round: a
process that opened the file just before it was deleted may get the flock on the deleted
file once it is released, so every writer, once it holds a flock, checks that the path still
names the file it locked and starts again if not. A refused writer deletes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Iterator

from siamcli.errors import UserError


def lock_path(index_dir: Path) -> Path:
    index_dir = Path(index_dir)
    return index_dir.parent / f".{index_dir.name}-lock"


@contextlib.contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    index_dir = Path(index_dir)
    path = lock_path(index_dir)
    handle = _acquire(path, index_dir)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still held: nobody else can lock this file and find it named by the path
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _acquire(path: Path, index_dir: Path) -> IO[str]:
    """The lock file, open and exclusively locked, its path still naming it; UserError when held."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")
        except OSError as exc:
            raise UserError(f"cannot create a lock beside {index_dir} ({exc.strerror}); check the folder is writable") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"another `siamcli index` ({holder}) is updating {index_dir}; wait for it to finish, then run again") from None
        if _names(path, handle):
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            return handle
        handle.close()  # the previous holder deleted this file as it finished: lock the one at the path now


def _names(path: Path, handle: IO[str]) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
