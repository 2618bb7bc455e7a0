"""The one renderer of the engine's progress events (`siamcli.events.Events`), on stderr.

Every stage ends with one plain line (`decoding images: 32/32  0.4 s`; a stage that ends with
a result, such as a training epoch or a decision, prints `name: result` as soon as it is known,
as Keras does with `verbose=2`). Off a terminal (CI logs, `nohup`, a pipe) that is all. On a
terminal the same lines are printed, wrapped to its width so that nothing is cut, and below
them one live bar shows the current stage: spinner, name, bar, count, elapsed time, status,
fitted to the width (the name and the status are shortened, never the count or the clock); it
disappears at the end, so what stays on screen is what a log holds. Warnings are plain
`warning:` lines either way.
"""

from __future__ import annotations

import datetime
import time

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from siamcli.cli.common import stderr, warn
from siamcli.events import Events

BAR_WIDTH = 24  # the bar's longest; it shrinks on a narrow terminal, down to MIN_BAR_WIDTH
MIN_BAR_WIDTH = 8


class ProgressDisplay(Events):
    """Use as a context manager around one engine call: `with ProgressDisplay() as events: ...`."""

    def __init__(self, console: Console = stderr, live: bool | None = None):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.view: Live | None = None  # the live bar, from the first stage on (an early error draws nothing)
        self.spinner = Spinner("dots")
        self.name = ""
        self.total: int | None = None
        self.done = 0
        self.status = ""
        self.reported = True  # the current stage's line is printed (or there is no stage)
        self.started = 0.0

    def __enter__(self) -> "ProgressDisplay":
        return self

    def __exit__(self, *exc) -> bool:
        self._finish_stage(failed=exc[0] is not None)
        if self.view is not None:
            self.view.stop()  # transient: the bar goes, the lines stay
        return False

    # ---- Events ---------------------------------------------------------------------------
    def message(self, text: str) -> None:
        warn(text)  # while the bar is live, Rich puts stderr's lines above it

    def stage(self, name: str, total: int | None = None) -> None:
        self._finish_stage()
        self.name, self.total, self.done, self.status = name, total, 0, ""
        self.reported, self.started = False, time.perf_counter()
        if self.live and self.view is None:
            self.view = Live(_LiveBar(self), console=self.console, transient=True, refresh_per_second=10, redirect_stdout=False)
            self.view.start()
        self._refresh()

    def advance(self, count: int = 1, status: str = "") -> None:
        self.done += count
        self.status = status or self.status

    def result(self, text: str) -> None:
        self.status = text
        self._print_line(text)
        self.reported = True
        self._refresh()

    # ---- rendering ------------------------------------------------------------------------
    def _finish_stage(self, failed: bool = False) -> None:
        if not self.reported and not failed:  # a failure's one error line says it all
            done = f"{self.done}/{self.total}  " if self.total else ""
            status = f"{self.status}  " if self.status else ""
            self._print_line(f"{done}{status}{time.perf_counter() - self.started:.1f} s")
        self.reported = True

    def _print_line(self, text: str) -> None:
        # Off a terminal one line per stage, however long; on one, wrapped by words to its width.
        self.console.print(f"{self.name}: {text}", markup=False, highlight=False, soft_wrap=not self.live)

    def _refresh(self) -> None:
        if self.view is not None:
            self.view.refresh()

    def bar_line(self, width: int) -> Text:
        """The live row for the current stage, at most `width` cells wide."""
        clock = str(datetime.timedelta(seconds=int(time.perf_counter() - self.started)))
        count = f"{min(self.done, self.total)}/{self.total}" if self.total else ""
        fixed = [part for part in (count, clock) if part]
        bar = 0 if not self.total else max(MIN_BAR_WIDTH, min(BAR_WIDTH, width // 5))
        room = width - 2 - (bar + 1 if bar else 0) - sum(len(part) + 1 for part in fixed)
        name = _fit(self.name, max(room, 1))
        status = _fit(self.status, room - len(name) - 2) if not self.reported else ""
        line = Text.assemble(self.spinner.render(time.monotonic()), " ", name)
        if bar:
            filled = bar * min(self.done, self.total) // self.total
            line.append(" ").append("━" * filled, "bar.complete").append("━" * (bar - filled), "bar.back")
        line.append(" " + " ".join(fixed), "progress.elapsed")
        if status:
            line.append("  " + status)
        line.truncate(width, overflow="ellipsis")
        return line


def _fit(text: str, width: int) -> str:
    """`text`, cut to `width` characters with an ellipsis ('' when there is no room)."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


class _LiveBar:
    """Renders the display's live row at the console's width, at every refresh."""

    def __init__(self, display: ProgressDisplay):
        self.display = display

    def __rich_console__(self, console, options):
        yield self.display.bar_line(options.max_width)
