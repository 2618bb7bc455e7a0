"""Same options and seed, same model: two runs of `siamcli train` agree to the bit on CPU.

Everything random in a run (the identity split, the P×K batches, augmentation, dropout, the
network's initial weights) is drawn from the one --seed, so a run can be reproduced exactly and a
difference between two runs is always a difference in their options or data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_identity_folders
from typer.testing import CliRunner

runner = CliRunner()

# The from-scratch regime with its random parts on: augmentation and dropout (the defaults), an
# identity split, the identity folds (few held-out identities) and both phases.
OPTIONS = ["--image-size", "32", "--weights", "none", "--embedding-dim", "8", "--batch-size", "8",
           "--images-per-identity", "2", "--steps-per-epoch", "2", "--frozen-epochs", "1", "--finetune-epochs", "1",
           "--val-fraction", "0.34", "--seed", "7", "--json"]


def _weights(model_path) -> list[np.ndarray]:
    from siamcli.models.embedding import load_embedding_model

    return [w.numpy() for w in load_embedding_model(model_path).weights]


@pytest.mark.train
def test_two_runs_with_the_same_seed_give_the_same_history_and_weights(tmp_path):
    from siamcli.cli.app import app

    data = write_identity_folders(tmp_path / "data", identities=6, per_identity=4, size=32)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        result = runner.invoke(app, ["train", str(data), "--out", str(run), *OPTIONS])
        assert result.exit_code == 0, result.output
    timings = ["seconds", "images_per_second"]  # the clock's, not the model's
    first, second = (pd.read_csv(run / "history.csv").drop(columns=timings) for run in runs)
    assert len(first) >= 2
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    weights_a, weights_b = _weights(runs[0] / "model.keras"), _weights(runs[1] / "model.keras")
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    # And a different seed is a different run: the test can tell runs apart.
    other = tmp_path / "c"
    result = runner.invoke(app, ["train", str(data), "--out", str(other), *OPTIONS[:-3], "--seed", "8", "--json"])
    assert result.exit_code == 0, result.output
    assert any(not np.array_equal(a, c) for a, c in zip(weights_a, _weights(other / "model.keras")))
