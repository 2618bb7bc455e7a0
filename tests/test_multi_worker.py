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


@pytest.fixture(scope="module")
def reference(reference_run):
    """(data, options, loss per epoch): the session's single-process reference run (1 frozen + 3
    fine-tune epochs); `options` train 1 + 1 epochs, which must match its first two rows."""
    data, options, run = reference_run
    return data, [*options, "--finetune-epochs", "1"], pd.read_csv(run / "history.csv")["loss"].to_numpy()


def test_two_workers_train_one_run_that_matches_a_single_process(tmp_path, reference):
    data, options, single_loss = reference
    processes = _start_workers(data, ["--out", str(tmp_path / "runs" / "multi"), "--strategy", "multi-worker"], options, tmp_path)
    outputs = _wait_for_workers(processes)
    for code, _, err in outputs:
        assert code == 0, err[-3000:]

    chief = tmp_path / "runs" / "multi"
    summaries = [json.loads(out) for _, out, _ in outputs]
    assert summaries[0]["run_dir"] == str(chief) and summaries[1]["run_dir"] != str(chief)  # only the chief writes it
    config = json.loads((chief / "config.json").read_text())
    assert config["workers"] == 2 and config["replicas"] == 2
    from siamcli.models.embedding import load_embedding_model

    assert load_embedding_model(chief / "model.keras").output_shape == (None, 8)

    multi_loss = pd.read_csv(chief / "history.csv")["loss"]
    # Same global batches, triplets mined over the gathered global batch: the same loss up to
    # float summation order.
    assert len(multi_loss) == 2
    np.testing.assert_allclose(multi_loss, single_loss[:2], rtol=2e-3, atol=1e-4)


def test_two_workers_killed_mid_run_resume_from_the_chiefs_checkpoint(tmp_path, reference):
    """Both workers killed after the first fine-tune epoch; `--resume` on both finishes the run
    from the chief's last checkpoint, and every epoch's loss is that of an uninterrupted
    single-process run."""
    import time

    data, options, single_loss = reference
    options = [*options, "--finetune-epochs", "3"]
    run = tmp_path / "runs" / "multi"
    processes = _start_workers(data, ["--out", str(run), "--strategy", "multi-worker"], options, tmp_path)
    from siamcli.training.checkpoint import latest_epoch

    checkpoints = run / "checkpoints"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if latest_epoch(checkpoints) == 2:
            break
        time.sleep(0.05)
    for process in processes:
        process.kill()
        process.communicate()
    assert latest_epoch(checkpoints) in (2, 3), "the run never completed epoch 2"

    resumed = _start_workers(None, ["--resume", str(run)], ["--json"], tmp_path)
    for code, _, err in _wait_for_workers(resumed):
        assert code == 0, err[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4] and list(history["phase"]) == ["frozen"] + ["finetune"] * 3
    np.testing.assert_allclose(history["loss"], single_loss, rtol=2e-3, atol=1e-4)
