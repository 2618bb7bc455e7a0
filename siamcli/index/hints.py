"""The commands that index messages suggest, written so that they run as printed.

A hint that leaves out `--model` or `--out` runs against runs/latest and its default index,
which may be another model and another index: `siamcli index GAL --prune`, copied from a
warning about an index at idx/gal, once built a new index somewhere else and exited 0. So every
suggested command repeats each option that selects the index (command() quotes them for a
shell), and a damaged-index message ends with REBUILD, to which store.naming_the_rebuild
appends the exact rebuild command read from the index's manifest.
"""

from __future__ import annotations

import shlex

REBUILD = "rebuild it"  # the end of every damaged-index message; store.naming_the_rebuild adds "with `siamcli index …`"


def command(*args: object, program: str = "index") -> str:
    """`siamcli index ARGS…` in backticks, each argument quoted for a POSIX shell."""
    return "`" + " ".join(["siamcli", program, *(shlex.quote(str(arg)) for arg in args)]) + "`"
