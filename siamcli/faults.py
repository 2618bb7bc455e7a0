"""Crash points: where a test may have siamcli kill itself, to prove a write survives SIGKILL.

`crash_point("name")` does nothing unless the environment variable SIAMCLI_CRASH_AT equals
"name"; then the process sends itself SIGKILL on the spot: no `finally`, no cleanup, exactly
what a power cut or the OOM killer leaves behind. tests/test_index_crash.py kills an index
update between each of its steps this way and checks the index is consistent afterwards.
"""

from __future__ import annotations

import os
import signal

ENV = "SIAMCLI_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
