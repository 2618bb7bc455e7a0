"""One writer per index directory.

Two `siamcli index` runs on one index would each build from the same old index and the second
swap would silently drop the first one's additions. An exclusive `flock` on a lock file beside
the index directory (not inside it: the directory itself is swapped) makes the second run
refuse at once with a clear message. The kernel releases the lock when its holder exits, even
on SIGKILL, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from siamcli.errors import UserError


@contextlib.contextmanager
def index_lock(index_dir: Path) -> Iterator[None]:
    index_dir = Path(index_dir)
    try:
        index_dir.parent.mkdir(parents=True, exist_ok=True)
        handle = open(index_dir.parent / f".{index_dir.name}-lock", "a+")
    except OSError as exc:
        raise UserError(f"cannot create a lock beside {index_dir} ({exc.strerror}); check the folder is writable") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"another `siamcli index` ({holder}) is updating {index_dir}; wait for it to finish, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
