"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.train


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(data, out_args, options, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "siamcli", "train", *([str(data)] if data else []), *out_args, *options]
        processes.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def _wait_for_workers(processes):
    """[(returncode, stdout, stderr)] of every worker; all are killed if one runs past 10 minutes."""
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("a worker did not finish within 10 minutes")
        outputs.append((process.returncode, out, err))
    return outputs


# Compared column by column with the single-process reference run. The loss alone is no check
# here: the start model (a PCA head) already separates these identities by more than the margin,
# so every epoch's loss is 0; the mean distances still depend on every batch and every weight.
COMPARED = ["loss", "positive_distance", "negative_distance"]


@pytest.fixture(scope="module")
def multi_worker_run(reference_run, tmp_path_factory):
    """One two-worker run shared by the tests below: the reference options (1 frozen + 3 fine-tune
    epochs), both workers killed once the chief has checkpointed epoch 2, then `--resume` on both.

    Returns (run, resumed worker outputs [(returncode, stdout, stderr)], latest epoch at the kill,
    reference history). Epochs 1-2 of history.csv are those of the uninterrupted stretch, 3-4
    those of the resumed workers."""
    import time

    from siamcli.training.checkpoint import latest_epoch

    data, options, reference = reference_run
    base = tmp_path_factory.mktemp("multi_worker")
    run = base / "runs" / "multi"
    processes = _start_workers(data, ["--out", str(run), "--strategy", "multi-worker"], options, base)
    checkpoints = run / "checkpoints"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if latest_epoch(checkpoints) == 2:
            break
        time.sleep(0.05)
    for process in processes:
        process.kill()
        process.communicate()
    killed_at = latest_epoch(checkpoints)
    resumed = _start_workers(None, ["--resume", str(run)], ["--json"], base) if killed_at in (2, 3) else []
    return run, _wait_for_workers(resumed), killed_at, pd.read_csv(reference / "history.csv")


def test_two_workers_train_one_run_that_matches_a_single_process(multi_worker_run):
    run, outputs, _, single = multi_worker_run
    for code, _, err in outputs:
        assert code == 0, err[-3000:]

    summaries = [json.loads(out) for _, out, _ in outputs]
    assert summaries[0]["run_dir"] == str(run) and summaries[1]["run_dir"] != str(run)  # only the chief writes it
    config = json.loads((run / "config.json").read_text())
    assert config["workers"] == 2 and config["replicas"] == 2
    from siamcli.models.embedding import load_embedding_model

    assert load_embedding_model(run / "model.keras").output_shape == (None, 8)

    # Epochs 1-2, trained before the kill by the two workers uninterrupted. Same global batches,
    # triplets mined over the gathered global batch: the same values up to float summation order.
    multi = pd.read_csv(run / "history.csv")
    assert list(multi["epoch"][:2]) == [1, 2]
    np.testing.assert_allclose(multi[COMPARED][:2], single[COMPARED][:2], rtol=2e-3, atol=1e-4)


def test_two_workers_killed_mid_run_resume_from_the_chiefs_checkpoint(multi_worker_run):
    """Both workers killed after the first fine-tune epoch; `--resume` on both finishes the run
    from the chief's last checkpoint, and every epoch is that of an uninterrupted single-process run."""
    run, outputs, killed_at, single = multi_worker_run
    assert killed_at in (2, 3), "the run never completed epoch 2"
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4] and list(history["phase"]) == ["frozen"] + ["finetune"] * 3
    np.testing.assert_allclose(history[COMPARED], single[COMPARED], rtol=2e-3, atol=1e-4)
