"""How the engine reports progress: one small protocol for train, index, evaluate and serve.

Long work is a sequence of *stages* (decoding images, an epoch, embedding a gallery, scoring
baselines). Within a stage the engine *advances* by a count (images, steps) with an optional
status text (loss, speed); a stage may end with a *result* line (an epoch's validation scores).
*Messages* are warnings the user should read. The engine never draws anything itself: the CLI
renders these calls (a Rich bar on a terminal, one plain line per stage elsewhere) and a library
caller may pass its own `Events` or none at all.
"""

from __future__ import annotations


class Events:
    """Progress callbacks; every method is optional (the defaults do nothing)."""

    def message(self, text: str) -> None:
        """A warning worth a line of its own (skipped files, early stops, collapse)."""

    def stage(self, name: str, total: int | None = None) -> None:
        """A new stage of work starts; `total` units are expected (None: unknown)."""

    def advance(self, count: int = 1, status: str = "") -> None:
        """`count` more units of the current stage are done; `status` is a short live summary."""

    def result(self, text: str) -> None:
        """The current stage ended with this one-line outcome (e.g. an epoch's validation scores)."""


NO_EVENTS = Events()
