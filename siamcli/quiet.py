"""Run a piece of work with file descriptors 1 and 2 pointed at a temporary file.

Native libraries print straight to the descriptors, past Python's sys.stdout and sys.stderr:
the LiteRT interpreter announces its CPU delegate on its first run, converters print MLIR.
What they printed is thrown away when the work succeeds and replayed on stderr when it fails,
so their words still explain a failure. Imports nothing from siamcli, so every layer can use it.
"""

from __future__ import annotations

import os
import sys
import tempfile


def quietly(work):
    """`work()` with descriptors 1 and 2 silenced; its return value, or its exception after
    replaying (the last 4,000 characters of) what it printed."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            return work()
        except BaseException:
            os.dup2(saved[1], 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
