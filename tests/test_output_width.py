"""What a pipe or a test reads does not depend on the terminal's width: a query table read at 60
columns (COLUMNS=60) over a gallery whose path is 150 characters long keeps every cell whole on
its row, in a subprocess and through CliRunner; on a real terminal it stays a Rich table that fits."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import statistics
import subprocess
import sys

import pytest
from conftest import run_cli, write_test_calibration
from test_index_cli import invoke
from test_index_engine import build, copy_run, tiny_data
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # queries the tiny ResNet50 run

NARROW = {"COLUMNS": "60"}
GONE_NOTE = "(file gone)"


@pytest.fixture(scope="module")
def long_gallery(tmp_path_factory, tiny_run):
    """(run, query image, expected rows): the tiny run's 30 images indexed under a 150-character
    gallery path, a calibration that splits them into match / no match, and the query's own
    file deleted since (its row says "file gone")."""
    base = tmp_path_factory.mktemp("width")
    run, _ = copy_run(tiny_run, base, with_data=False)
    gallery = base / ("g" * (150 - len(str(base)) - 1))
    assert len(str(gallery)) == 150
    shutil.copytree(tiny_data(tiny_run), gallery)
    build(run, gallery)
    query = base / "query.png"
    shutil.copy(gallery / "id_1" / "img_0.png", query)
    median = statistics.median(row["similarity"] for row in answer_json(run, query))
    write_test_calibration(run, threshold=2 - 2 * median)  # about half the rows match
    (gallery / "id_1" / "img_0.png").unlink()
    rows = answer_json(run, query)
    assert {row["match"] for row in rows} == {True, False} and sum(row.get("missing", False) for row in rows) == 1
    return run, query, rows


def answer_json(run, query) -> list[dict]:
    result = invoke("query", query, "--model", run, "--k", "30", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)[0]["results"]


def assert_every_row_whole(table: str, rows: list[dict]) -> None:
    """Each result is one line of the table holding exactly its cells: rank, similarity, match,
    label, and the path whole (with the note when the file is gone)."""
    lines = table.splitlines()
    for row in rows:
        line = next((line for line in lines if row["path"] in line), None)
        assert line is not None, f"{row['path']} is not on one line:\n{table}"
        cells = [cell.strip() for cell in re.split("[│|]", line.strip(" │|"))]
        path = row["path"] + (f" {GONE_NOTE}" if row.get("missing") else "")
        assert cells == [str(row["rank"]), f"{row['similarity']:.4f}", "match" if row["match"] else "no match", row["label"], path], line
    assert sum(GONE_NOTE in line for line in lines) == 1


def test_a_pipe_at_60_columns_prints_every_cell_whole(long_gallery):
    run, query, rows = long_gallery
    done = run_cli("query", str(query), "--model", str(run), "--k", "30", env=NARROW)
    assert done.returncode == 0, done.stderr
    assert_every_row_whole(done.stdout, rows)


def test_cli_runner_at_60_columns_prints_every_cell_whole(long_gallery):
    from siamcli.cli.app import app

    run, query, rows = long_gallery
    result = CliRunner().invoke(app, ["query", str(query), "--model", str(run), "--k", "30"], env=NARROW)
    assert result.exit_code == 0, result.stderr
    assert_every_row_whole(result.stdout, rows)


def read_terminal(*args: str, columns: int) -> str:
    """The CLI's stdout as a pseudo-terminal of `columns` columns shows it (ANSI codes removed)."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "siamcli", *args], stdin=subprocess.DEVNULL, stdout=follower,
                               stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": str(columns)})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    process.stderr.close()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")


def test_a_terminal_keeps_a_rich_table_that_fits_its_width(long_gallery):
    run, query, rows = long_gallery
    shown = read_terminal("query", str(query), "--model", str(run), "--k", "3", columns=60)
    table = [line for line in shown.splitlines() if line.strip() and line != str(query)]
    assert table[0].startswith("┏") and "rank" in table[1] and "path" in table[1]
    assert all(len(line) <= 60 for line in table), shown
    assert rows[0]["path"] not in shown  # folded to fit, as a terminal should
