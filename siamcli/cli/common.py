"""Shared CLI plumbing: consoles, one-line errors with exit codes, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterator, NoReturn

import typer
from rich.console import Console, ConsoleDimensions

from siamcli.jsonio import json_default

PIPE_WIDTH = 10_000  # off a terminal: wider than any row, so no cell is ever folded


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _Console(Console):
    """Rich's console, its width decided at each print, not once at import: on a terminal the
    terminal's own (Rich's rule: COLUMNS, else the terminal's size), so a table fits the screen;
    off one (a pipe, a file, a test's captured stream) PIPE_WIDTH whatever COLUMNS says, so what
    a script or a test reads is the same at every width."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if _is_tty(self.file) else ConsoleDimensions(PIPE_WIDTH, size.height)


# Human-facing output (tables, progress) goes to stderr when --json owns stdout.
stdout = _Console(highlight=False)
stderr = _Console(stderr=True, highlight=False)

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: message` as a single stderr line (never wrapped) and exit."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {one_line(message)}\n")
    sys.stderr.flush()


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Map engine exceptions to exit codes: UserError or an OSError on a path → 2, Ctrl-C → 130,
    anything else → 1."""
    from siamcli.errors import Interrupted, UserError

    try:
        yield
    except typer.Exit:
        raise
    except Interrupted as exc:
        fail(str(exc), EXIT_INTERRUPTED)
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; artifacts written so far are intact", EXIT_INTERRUPTED)
    except OSError as exc:
        if exc.filename is None or os.environ.get("SIAMCLI_DEBUG"):
            raise
        # A path the user gave (or one under it) cannot be read or written: say which and why.
        fail(f"cannot use {exc.filename}: {exc.strerror or exc}; check that it exists and that you may read (and write) it")
    except Exception as exc:  # an unexpected failure: one line, traceback on request
        if os.environ.get("SIAMCLI_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set SIAMCLI_DEBUG=1 to see the traceback)", EXIT_FAILURE)


def print_json(document: Any) -> None:
    """One JSON document on stdout and nothing else."""
    sys.stdout.write(json.dumps(document, indent=2, default=json_default) + "\n")
    sys.stdout.flush()


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if value != value else f"{value:.{digits}f}"
    return str(value)
