"""The Makefile's test targets are what CI runs: a collection that finds no test must fail them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["test", "check"])
def test_a_run_that_collects_no_test_fails(target):
    # As a broken import or a wrong path would: pytest is pointed at this file and selects nothing.
    nothing = {"PYTEST_ADDOPTS": f"{Path(__file__)} -k no_test_is_named_like_this -p no:cacheprovider"}
    # -o: never rebuild the virtualenv from here; BIN: this interpreter's, wherever it lives.
    command = ["make", "-s", "-o", ".venv/.installed", target, f"BIN={Path(sys.executable).parent}", "PYTEST_WORKERS="]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **nothing})
    assert result.returncode != 0, result.stdout[-2000:]
    assert "collected no tests" in result.stderr
