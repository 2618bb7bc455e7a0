"""The one renderer of the engine's progress events (`siamcli.events.Events`), on stderr.

On a terminal: a Rich bar per stage that has a size (images, steps), a spinner line for one
that has not; a stage's result stays on its bar. Elsewhere (CI logs, `nohup`, a pipe), where a
live bar would be invisible or garbage: one plain line per finished stage, and a stage that
ends with a result (a training epoch) prints that line as soon as it is known, as Keras does
with `verbose=2`. Warnings are plain `warning:` lines either way.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from siamcli.cli.common import stderr, warn
from siamcli.events import Events


class _Bar(BarColumn):
    def render(self, task):  # a stage of unknown size shows its spinner only, not a pulsing bar
        return Text("") if task.total is None else super().render(task)


class _Count(MofNCompleteColumn):
    def render(self, task):
        return Text("") if task.total is None else super().render(task)


class ProgressDisplay(Events):
    """Use as a context manager around one engine call: `with ProgressDisplay() as events: ...`."""

    def __init__(self, console: Console = stderr, live: bool | None = None):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.progress: Progress | None = None
        self.task = None
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
        if self.progress is not None:
            self.progress.stop()
        return False

    # ---- Events ---------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.stop()  # a plain line must not be drawn over by the live display
            warn(text)
            self.progress.start()
        else:
            warn(text)

    def stage(self, name: str, total: int | None = None) -> None:
        self._finish_stage()
        self.name, self.total, self.done, self.status = name, total, 0, ""
        self.reported, self.started = False, time.perf_counter()
        if self.live and self.progress is None:  # started by the first stage: an early error draws nothing
            self.progress = Progress(
                SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), _Bar(bar_width=24),
                _Count(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                console=self.console, transient=False,
            )
            self.progress.start()
        if self.progress is not None:
            self.task = self.progress.add_task(name, total=total, status="")

    def advance(self, count: int = 1, status: str = "") -> None:
        self.done += count
        self.status = status or self.status
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=count, status=self.status)

    def result(self, text: str) -> None:
        self.status = text
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, status=text)
        else:
            self._print_line(text)
        self.reported = True

    # ---- rendering ------------------------------------------------------------------------
    def _finish_stage(self, failed: bool = False) -> None:
        if self.progress is not None and self.task is not None:
            task = self.progress.tasks[self.task]
            if task.total is None:  # a spinner line has done its job: leave no trace
                self.progress.update(self.task, visible=False)
            elif not failed:
                self.progress.update(self.task, completed=task.total)
            self.progress.stop_task(self.task)
            self.task = None
        if not self.reported and not failed:  # a failure's one error line says it all
            done = f"{self.done}/{self.total}  " if self.total else ""
            status = f"{self.status}  " if self.status else ""
            self._print_line(f"{done}{status}{time.perf_counter() - self.started:.1f} s")
        self.reported = True

    def _print_line(self, text: str) -> None:
        if self.progress is None:
            self.console.print(f"{self.name}: {text}", markup=False, highlight=False, soft_wrap=True)
