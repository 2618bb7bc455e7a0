"""The one progress renderer: plain lines when the output is not a terminal (CI logs, nohup,
pipes), a live display on a terminal; the same engine events drive both."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from siamcli.cli.progress import ProgressDisplay


def _drive(display: ProgressDisplay) -> None:
    """What a two-epoch training run tells its caller."""
    with display as events:
        events.stage("decoding images", 4)
        events.advance(2)
        events.advance(2)
        for epoch in (1, 2):
            events.stage(f"epoch {epoch} (frozen {epoch}/2)", 3)
            for _ in range(3):
                events.advance(1, "loss 0.300  100 img/s")
            events.result(f"loss 0.{epoch}00  100 img/s  val P@1 1.000  MAP@R 0.900  1.0 s")
        events.stage("writing the index")


def test_plain_output_is_one_line_per_stage_and_epoch():
    out = io.StringIO()
    _drive(ProgressDisplay(Console(file=out, width=200), live=False))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("decoding images: 4/4  ")
    assert lines[1] == "epoch 1 (frozen 1/2): loss 0.100  100 img/s  val P@1 1.000  MAP@R 0.900  1.0 s"
    assert lines[2] == "epoch 2 (frozen 2/2): loss 0.200  100 img/s  val P@1 1.000  MAP@R 0.900  1.0 s"
    assert lines[3].startswith("writing the index: ") and lines[3].endswith(" s")


def test_a_failed_stage_prints_nothing_after_it(capsys):
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with ProgressDisplay(Console(file=out, width=200), live=False) as events:
            events.stage("embedding", 10)
            events.advance(3)
            raise RuntimeError("the error line is the CLI's to print")
    assert out.getvalue() == ""


def test_warnings_are_plain_lines_on_stderr(capsys):
    with ProgressDisplay(Console(file=io.StringIO(), width=200), live=False) as events:
        events.message("3 files skipped")
    assert capsys.readouterr().err == "warning: 3 files skipped\n"


def test_an_error_before_any_stage_draws_nothing_on_a_terminal():
    out = io.StringIO()
    with pytest.raises(ValueError):
        with ProgressDisplay(Console(file=out, width=200, force_terminal=True), live=True):
            raise ValueError("a bad folder: the CLI prints one error line, with no blank line before it")
    assert out.getvalue() == ""


def test_a_terminal_gets_a_live_display_with_each_stage_and_result():
    out = io.StringIO()
    _drive(ProgressDisplay(Console(file=out, width=200, force_terminal=True), live=True))
    text = out.getvalue()
    assert "decoding images" in text and "epoch 2 (frozen 2/2)" in text
    assert "MAP@R 0.900" in text  # the result stays on its bar
