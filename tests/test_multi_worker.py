"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train like one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import resnet_weights_file

pytestmark = pytest.mark.slow

OPTIONS = ["--image-size", "32", "--embedding-dim", "8", "--batch-size", "8", "--images-per-identity", "2",
           "--steps-per-epoch", "3", "--frozen-epochs", "1", "--finetune-epochs", "1", "--no-augment",
           "--dropout", "0", "--seed", "4", "--finetune-from", "conv5_block1_out", "--finetune-lr", "1e-3", "--json"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_one_run_that_matches_a_single_process(tmp_path, image_folders):
    data = image_folders(identities=5, per_identity=4, size=32)
    options = [*OPTIONS, "--weights", str(resnet_weights_file(tmp_path))]
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "siamcli", "train", str(data), "--out", str(tmp_path / "runs" / "multi"),
                   "--strategy", "multi-worker", *options]
        processes.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("a worker did not finish within 10 minutes")
        outputs.append((process.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, err[-3000:]

    chief = tmp_path / "runs" / "multi"
    summaries = [json.loads(out) for _, out, _ in outputs]
    assert summaries[0]["run_dir"] == str(chief) and summaries[1]["run_dir"] != str(chief)  # only the chief writes it
    config = json.loads((chief / "config.json").read_text())
    assert config["workers"] == 2 and config["replicas"] == 2
    from siamcli.models.embedding import load_embedding_model

    assert load_embedding_model(chief / "model.keras").output_shape == (None, 8)

    single = subprocess.run([sys.executable, "-m", "siamcli", "train", str(data), "--out", str(tmp_path / "single"),
                             "--strategy", "default", *options], cwd=tmp_path, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    multi_loss = pd.read_csv(chief / "history.csv")["loss"]
    single_loss = pd.read_csv(tmp_path / "single" / "history.csv")["loss"]
    # Same global batches, triplets mined over the gathered global batch: the same loss up to
    # float summation order.
    np.testing.assert_allclose(multi_loss, single_loss, rtol=2e-3, atol=1e-4)
