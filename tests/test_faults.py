"""Faults: runs killed with SIGKILL mid-way keep what they had and the next run recovers."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from siamcli.faults import ENV
from siamcli.training.checkpoint import latest_epoch

# A run killed before its first checkpoint only has to start again and finish: the smallest run
# (one frozen epoch, no fine-tuning, no identity folds).
TRAIN_OPTIONS = ["--image-size", "32", "--embedding-dim", "8", "--batch-size", "8", "--images-per-identity", "2",
                 "--steps-per-epoch", "2", "--frozen-epochs", "1", "--finetune-epochs", "0", "--no-augment",
                 "--dropout", "0", "--seed", "3", "--patience", "0", "--json"]


def _siamcli(*args):
    return [sys.executable, "-m", "siamcli", *args]


def _in_process(*args):
    """`siamcli ARGS` through the CLI in this process: for the commands that follow a kill and need
    no process of their own (TensorFlow is already started here)."""
    from typer.testing import CliRunner

    from siamcli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _wait_for(predicate, process, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.train
def test_train_killed_mid_epoch_resumes_from_the_last_complete_epoch(tmp_path, reference_run):
    # Reference: the same run (1 frozen + 3 fine-tune epochs), uninterrupted.
    data, options, reference = reference_run
    run = tmp_path / "killed"
    # The process kills itself (SIGKILL) inside epoch 2, the first fine-tune epoch, after its
    # second step of three: after epoch 1's checkpoint, with optimiser steps taken since.
    killed = subprocess.run(_siamcli("train", str(data), "--out", str(run), *options), capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, ENV: "train-epoch-2-step-2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = run / "checkpoints"
    assert latest_epoch(checkpoints) == 1
    assert (run / "model.keras").is_file()
    start = (run / "start.keras").read_bytes()  # written before the first step

    resumed = subprocess.run(_siamcli("train", "--resume", str(run), "--json"), capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch 1: the last complete one ({checkpoints / 'ckpt-1'})" in resumed.stderr.splitlines()
    assert (run / "start.keras").read_bytes() == start  # the resumed run keeps the start it had
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]  # every epoch exactly once
    assert list(history["phase"]) == ["frozen", "finetune", "finetune", "finetune"]
    expected = pd.read_csv(reference / "history.csv")
    # Same seed, same sampler state, same optimiser state: the resumed run retraces the
    # uninterrupted one. Tolerance: 1e-3 relative on every epoch's loss and mean distances (float
    # reductions only); the distances count because the loss of these epochs is 0 (the start model
    # already separates these identities by more than the margin).
    compared = ["loss", "positive_distance", "negative_distance"]
    np.testing.assert_allclose(history[compared], expected[compared], rtol=1e-3, atol=1e-5)

    again = _in_process("train", "--resume", run)
    assert again.exit_code == 2 and "nothing to resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_resume_of_a_folder_without_a_run_is_a_clear_error(tmp_path):
    proc = _in_process("train", "--resume", tmp_path)
    assert proc.exit_code == 2 and "not a siamcli run" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.train
def test_train_killed_before_its_first_checkpoint_can_be_started_again(tmp_path, image_folders):
    data = image_folders(identities=4, per_identity=4, size=32)
    run = tmp_path / "early"
    command = _siamcli("train", str(data), "--out", str(run), "--weights", "none", *TRAIN_OPTIONS)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    # Kill it as soon as the run directory exists: no epoch has finished yet.
    assert _wait_for(lambda: (run / "config.json").is_file(), process), "the run never started"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints" / "checkpoint").exists() and latest_epoch(run / "checkpoints") is None
    resumed = _in_process("train", "--resume", run)
    assert resumed.exit_code == 2 and "no complete checkpoint" in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1
    again = _in_process(*command[3:], "--force")  # the same `siamcli train` command line
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["epochs"] == 1  # every planned epoch
