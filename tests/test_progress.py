"""The one progress renderer: plain lines when the output is not a terminal (CI logs, nohup,
pipes), the same lines and one live bar on a terminal; the same engine events drive both."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from siamcli.cli.progress import ProgressDisplay


def final_screen(raw: str, width: int) -> list[str]:
    """What a terminal `width` columns wide shows after `raw` (text and the control sequences
    Rich writes: colours, cursor up, erase line, carriage return), one string per row, trailing
    blanks dropped. Fails on a write past column `width` (a real terminal would wrap it) and on a
    control sequence it does not know."""
    rows, row, column = [""], 0, 0
    for match in re.finditer(r"\x1b\[([0-9;?]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+", raw):
        token, (argument, command) = match.group(0), match.groups()
        if command == "m" or (argument, command) in (("?25", "l"), ("?25", "h")):  # colour, cursor hidden or shown
            continue
        if command == "A":
            row = max(0, row - int(argument or 1))
        elif command == "K" and argument == "2":
            rows[row] = ""
        elif command is not None:
            raise AssertionError(f"unexpected control sequence {token!r}")
        elif token == "\r":
            column = 0
        elif token == "\n":
            row, column = row + 1, 0
            rows.extend([""] * (row + 1 - len(rows)))
        else:
            assert column + len(token) <= width, f"{rows[row][:column] + token!r} is wider than {width} columns"
            rows[row] = rows[row][:column].ljust(column) + token + rows[row][column + len(token):]
            column += len(token)
    rows = [line.rstrip() for line in rows]
    while rows and not rows[-1]:
        rows.pop()
    return rows


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


def test_a_terminal_keeps_the_plain_lines_and_shows_one_live_bar():
    plain = io.StringIO()
    _drive(ProgressDisplay(Console(file=plain, width=200), live=False))
    out = io.StringIO()
    with ProgressDisplay(Console(file=out, width=80, force_terminal=True), live=True) as events:
        events.stage("decoding images", 4)
        events.advance(4)
        events.stage("epoch 1 (frozen 1/2)", 3)
        middle = final_screen(out.getvalue(), 80)
        # The finished stage's line stays; below it the one live bar of the current stage.
        assert len(middle) == 2 and middle[0].startswith("decoding images: 4/4  "), middle
        assert "epoch 1 (frozen 1/2)" in middle[1] and "0/3" in middle[1]
        events.advance(1, "loss 0.300  100 img/s")
        bar = events.bar_line(80).plain
        assert "epoch 1 (frozen 1/2)" in bar and " 1/3 " in bar and bar.endswith("loss 0.300  100 img/s"), bar
    out = io.StringIO()
    _drive(ProgressDisplay(Console(file=out, width=80, force_terminal=True), live=True))
    screen = final_screen(out.getvalue(), 80)
    strip_times = re.compile(r"\b\d+\.\d s\b")
    assert [strip_times.sub("T s", line) for line in screen] == [strip_times.sub("T s", line) for line in plain.getvalue().splitlines()]


def test_a_long_stage_and_status_are_cut_on_the_bar_and_kept_whole_in_the_line():
    out = io.StringIO()
    long_name = "choosing something with a description far longer than any terminal row could hold " * 2
    with ProgressDisplay(Console(file=out, width=80, force_terminal=True), live=True) as events:
        events.stage(long_name.strip(), 1000)
        events.advance(999, "a status that is long as well, and would push the count and the clock off the row")
        for width in (40, 80, 120):
            bar = events.bar_line(width).plain
            assert len(bar) <= width and "999/1000 0:00:00" in bar and "…" in bar, bar  # the count and clock survive
        events.result("a decision whose words must all stay on screen " * 3)
    screen = final_screen(out.getvalue(), 80)
    words = " ".join(" ".join(screen).split())
    assert words == " ".join(f"{long_name.strip()}: {'a decision whose words must all stay on screen ' * 3}".split())


def test_a_warning_during_a_live_stage_is_a_whole_line_above_the_bar():
    out = io.StringIO()
    with ProgressDisplay(Console(file=out, width=80, force_terminal=True), live=True) as events:
        events.stage("epoch 1 (frozen 1/2)", 3)
        events.message("epoch 1: embeddings are collapsing (all images map to nearly one point); try a lower learning rate")
        events.advance(3)
        screen = final_screen(out.getvalue(), 80)
        assert " ".join(screen[:-1]) == ("warning: epoch 1: embeddings are collapsing (all images map to nearly one point); "
                                         "try a lower learning rate")
        assert "epoch 1 (frozen 1/2)" in screen[-1]
    assert final_screen(out.getvalue(), 80)[-1].startswith("epoch 1 (frozen 1/2): 3/3  ")
