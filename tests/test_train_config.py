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


def _train_command_params() -> dict:
    import typer.main

    return {param.name: param for param in typer.main.get_command(app).commands["train"].params}


def test_every_training_option_is_declared_once_as_a_trainconfig_field():
    """`siamcli train`'s options are TrainConfig's fields: same names, defaults and help (the
    field's), nothing hand-copied; only the run controls are the CLI's own."""
    import dataclasses

    from siamcli.training.config import TrainConfig

    params = _train_command_params()
    fields = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}
    assert set(params) - set(fields) == {"out", "resume", "config_file", "force", "json_output"}
    assert set(fields) <= set(params)
    for name, spec in fields.items():
        assert params[name].help == spec.metadata["help"] and params[name].help, name
        if name != "data_dir":
            default = params[name].default
            assert getattr(default, "value", default) == spec.default, name
            assert params[name].opts == [f"--{name.replace('_', '-')}"], name  # the API's keyword is the flag's name
    choices = {name for name, spec in fields.items() if spec.metadata.get("choices")}
    assert choices == {"pooling", "mining", "strategy", "precision", "lr_schedule"}
    for name in choices:  # the CLI offers the field's choices and refuses others in one line, before any work
        done = CliRunner().invoke(app, ["train", "data", f"--{name.replace('_', '-')}", "nonsense"])
        assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.stderr
        assert all(value in done.stderr for value in fields[name].metadata["choices"].values()), done.stderr
    assert CliRunner().invoke(app, ["train", "--help"]).exit_code == 0


def test_help_states_each_default_by_reading_the_table_that_resolves_it():
    from siamcli.training import adaptive
    from siamcli.training.config import BY_DATA, MIN_STEPS_PER_EPOCH, TrainConfig, shown

    params = _train_command_params()
    scratch = adaptive.adapt(TrainConfig(data_dir="d", weights="none").resolve(), train_identities=16, val_identities=4)
    pretrained = adaptive.adapt(TrainConfig(data_dir="d").resolve(), train_identities=400, val_identities=100)
    for name in ("margin", "lr", "finetune_lr", "dropout", "pooling", "feature_layer", "finetune_from"):
        resolved = shown(getattr(pretrained, name)), shown(getattr(scratch, name))
        assert f"default: {resolved[0]} pretrained; {resolved[1]} from scratch" in params[name].help, name
    assert f"{scratch.finetune_patience} from scratch, {pretrained.finetune_patience} pretrained" in params["finetune_patience"].help
    assert f"default: {scratch.patience} frozen" in params["patience"].help
    decay = f"{shown(scratch.weight_decay)} with fewer than {BY_DATA.few_identities} training identities, else {shown(pretrained.weight_decay)}"
    assert decay in params["weight_decay"].help
    assert (scratch.weight_decay, pretrained.weight_decay) == (BY_DATA.weight_decay_few, BY_DATA.weight_decay)
    assert f"default: {scratch.val_image_fraction:g} when fewer than {BY_DATA.min_val_identities}" in params["val_image_fraction"].help
    assert f"at least {MIN_STEPS_PER_EPOCH})" in params["steps_per_epoch"].help
    # Augmentation acts in both phases (cached augmented views when frozen): the help says so.
    assert "frozen phase" in params["augment"].help and "fine-tuning" in params["augment"].help
