"""The API's own names in the engine's messages.

The engine's checks name an option as the CLI spells it (`--image-size must be at least 32`);
the notebook API takes the same option as a keyword. Rather than check everything twice, each
API entry point runs inside `api_names`, which rewrites a UserError's flags into the keywords of
that call: `--image-size` → `image_size`, `--model RUN_DIR` → `run=RUN_DIR`, a switch `--force`
→ `force=True` (`--no-augment` → `augment=False`). Text in backticks is a command to run in a
shell (`siamcli index GALLERY --force`) and stays as it is; a flag the call has no keyword for
stays too. The flag of a field is `--` + its name with dashes, the convention every command
follows (Typer derives them so).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import fields
from typing import Iterator

from siamcli.errors import UserError

_FLAG = re.compile(r"(?<![\w`-])--([a-z][a-z0-9-]*)(?: ([A-Z][A-Z0-9_]*\b))?")
COMMON = {"model": "run", "out": "out", "index": "index", "batch-size": "batch_size"}  # the API's names for these flags


@contextlib.contextmanager
def api_names(options: type | None = None, exclude: frozenset[str] = frozenset(), **aliases: str) -> Iterator[None]:
    """Re-raise a UserError with its flags named as the keywords of this call: those of
    `options`' fields (minus `exclude`), COMMON, and `aliases` (flag without dashes → keyword)."""
    try:
        yield
    except UserError as exc:
        exc.args = (translate(str(exc), keywords(options, exclude, aliases)),) + exc.args[1:]
        raise


def keywords(options: type | None, exclude: frozenset[str], aliases: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """flag (no dashes) → (keyword, is a switch)."""
    names = {flag: (keyword, False) for flag, keyword in COMMON.items()}
    for option in fields(options) if options is not None else ():
        if option.name not in exclude:
            names[option.name.replace("_", "-")] = (option.name, option.type in ("bool", bool))
    names.update({flag.replace("_", "-"): (keyword, False) for flag, keyword in aliases.items()})
    return names


def translate(message: str, names: dict[str, tuple[str, bool]]) -> str:
    """`message` with each flag outside backticks replaced by its keyword."""
    def keyword(match: re.Match) -> str:
        flag, metavar = match.group(1), match.group(2)
        negated = flag.startswith("no-") and names.get(flag[3:], ("", False))[1]
        name, switch = names.get(flag[3:] if negated else flag, (None, False))
        if name is None:
            return match.group(0)
        if metavar:
            return f"{name}={metavar}"
        return f"{name}={not negated}" if switch else name

    parts = message.split("`")
    return "`".join(_FLAG.sub(keyword, part) if i % 2 == 0 else part for i, part in enumerate(parts))
