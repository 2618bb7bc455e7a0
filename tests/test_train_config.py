"""`siamcli train --config RUN`: a new run with the resolved options of an earlier one, where
options given on the command line (and only those) override the recorded ones."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from typer.testing import CliRunner

from siamcli.cli.app import app


def test_config_trains_with_the_earlier_runs_options_and_explicit_flags_override(tiny_run, tmp_path):
    recorded = {**json.loads((tiny_run / "config.json").read_text()), "embedding_dim": 8, "margin": 0.3}
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "config.json").write_text(json.dumps(recorded))
    # --embedding-dim 256 is the CLI's default value, but typed: it overrides the recorded 8.
    # In this process (the same Typer parsing as a subprocess, without TensorFlow's start-up); --patience 0:
    # one epoch, no identity folds (not recorded in the earlier config, so not among the keys below).
    done = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "earlier" / "config.json"), "--out", str(tmp_path / "again"),
                                    "--frozen-epochs", "1", "--finetune-epochs", "0", "--steps-per-epoch", "1",
                                    "--batch-size", "8", "--images-per-identity", "2", "--embedding-dim", "256",
                                    "--patience", "0", "--json"])
    assert done.exit_code == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["epochs"] == 1
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    # From the earlier run: not on this command line, though the CLI defaults differ (224, 256, imagenet).
    for key in ("data_dir", "image_size", "weights", "feature_layer", "pooling", "margin", "lr", "seed"):
        assert again[key] == recorded[key], key
    assert (again["image_size"], again["weights"], again["margin"]) == (32, "none", 0.3)
    # Given explicitly: override.
    assert (again["frozen_epochs"], again["finetune_epochs"], again["steps_per_epoch"], again["batch_size"]) == (1, 0, 1, 8)
    assert again["embedding_dim"] == 256


def test_an_override_is_validated_before_training_starts(tiny_run):
    done = run_cli("train", "--config", str(tiny_run), "--image-size", "16")
    assert done.returncode == 2 and "--image-size must be at least 32" in done.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"image_size": "big"}, "image_size is 'big', expected int"),
        ({"mining": "hardest"}, "--mining must be one of"),
    ],
)
def test_a_damaged_config_is_one_line_and_exit_2(tiny_run, tmp_path, edit, message):
    data = {**json.loads((tiny_run / "config.json").read_text()), **edit}
    (tmp_path / "config.json").write_text(json.dumps(data))
    done = run_cli("train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_config_and_resume_together_or_a_missing_config_are_refused(tiny_run, tmp_path):
    both = run_cli("train", "--config", str(tiny_run), "--resume", str(tiny_run))
    assert both.returncode == 2 and "give one of the two" in both.stderr
    missing = run_cli("train", "--config", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--config" in missing.stderr and "not found" in missing.stderr


def test_train_config_round_trips_through_json(tiny_run):
    from siamcli.training.config import TrainConfig

    config = TrainConfig.from_run(tiny_run)
    assert TrainConfig.from_json(config.to_json()) == config == config.resolve()
