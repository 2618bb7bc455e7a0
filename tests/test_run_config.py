"""A run's config.json and split.json: one typed record each (siamcli/run_config.py), one
reader and one writer, versioned; runs of the previous release (no "format") still read."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from conftest import run_cli

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.run_config import CONFIG_FORMAT, RunConfig, RunSplit, read_config, read_split, write_config, write_split

PACKAGE = Path(__file__).resolve().parents[1] / "siamcli"

# config.json as the previous release wrote it after training: options, facts, selection; no format.
PREVIOUS_RELEASE = {
    "data_dir": "/nowhere/faces", "image_size": 32, "embedding_dim": 8, "weights": "none", "seed": 3, "margin": 0.5,
    "data_dir_from_run": "../faces", "replicas": 1, "workers": 1, "strategy_class": "_DefaultDistributionStrategy",
    "classes": {"train": 4, "val": 2}, "images": {"train": 12, "val": 12, "skipped": 0},
    "val_images_of_train_identities": ["id_0/img_3.png"], "versions": {"siamcli": "0.1.0"},
    "selection": {"start": {"map_at_r": 0.5, "precision_at_1": 0.6}, "kept_epoch": 1, "kept": {"map_at_r": 0.7, "phase": "frozen"},
                  "line": "kept epoch 1: …", "frozen_length_by_folds": [0.5, 0.6], "pixel_weight": 0.25,
                  "pixel_weight_chosen_by": "identity folds", "pixel_weight_scores": {"0": 0.4, "0.25": 0.5}},
}


def _writes_and_reads(package: Path) -> list[str]:
    """Every call of write_json / read_json in `package` whose arguments name a run's config or split file."""
    named = ("CONFIG_FILE", "SPLIT_FILE", "config.json", "split.json", "run config", "split file", ".config", ".split")
    found = []
    for path in package.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("write_json", "read_json"):
                text = ast.get_source_segment(source, node) or ""
                if any(word in text for word in named):
                    found.append(f"{path.relative_to(package)}:{node.lineno}: {text[:80]}")
    return found


def test_config_and_split_are_read_and_written_only_by_run_config():
    assert [line for line in _writes_and_reads(PACKAGE) if not line.startswith("run_config.py:")] == []


def test_a_previous_release_config_reads_and_rewrites_with_every_key_and_a_format(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PREVIOUS_RELEASE))
    config = read_config(tmp_path / "config.json")
    assert config.options == {key: PREVIOUS_RELEASE[key] for key in ("data_dir", "image_size", "embedding_dim", "weights", "seed", "margin")}
    assert (config.replicas, config.selection.kept_epoch, config.selection.frozen_length_by_folds) == (1, 1, [0.5, 0.6])
    assert config["image_size"] == 32 and config.get("pooling") is None and "selection" in config  # a mapping too
    write_config(tmp_path / "again.json", config)
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == {"format": CONFIG_FORMAT, **PREVIOUS_RELEASE}
    assert read_config(tmp_path / "again.json") == config


def test_the_data_folder_is_found_from_the_run_when_the_recorded_path_is_gone(tmp_path):
    (tmp_path / "faces").mkdir()
    (tmp_path / "run").mkdir()
    config = RunConfig.from_json(PREVIOUS_RELEASE)
    assert config.find_data(tmp_path / "run") == (tmp_path / "faces").resolve()
    assert RunConfig(options={"data_dir": "/nowhere"}).find_data(tmp_path / "run") is None


@pytest.mark.parametrize(
    ("edit", "error", "words"),
    [
        ({"format": CONFIG_FORMAT + 1}, UserError, "newer than this siamcli reads"),
        ({"format": "2"}, CorruptArtifactError, "format is '2', expected int"),
        ({"replicas": "two"}, CorruptArtifactError, "replicas is 'two'"),
        ({"selection": {"start": {}}}, CorruptArtifactError, "selection lacks a key"),
        ({"selection": {**PREVIOUS_RELEASE["selection"], "kept_epoch": "1"}}, CorruptArtifactError, "kept_epoch is '1'"),
    ],
)
def test_a_damaged_or_newer_config_is_refused_by_name(tmp_path, edit, error, words):
    (tmp_path / "config.json").write_text(json.dumps({**PREVIOUS_RELEASE, **edit}))
    with pytest.raises(error, match=words):
        read_config(tmp_path / "config.json")


def test_a_newer_config_given_to_train_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**PREVIOUS_RELEASE, "format": CONFIG_FORMAT + 1}))
    done = run_cli("train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "newer than this siamcli reads" in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_split_round_trips_and_a_damaged_one_is_named(tmp_path):
    write_split(tmp_path / "split.json", RunSplit(train=["a", "b"], val=["c"]))
    assert json.loads((tmp_path / "split.json").read_text()) == {"train": ["a", "b"], "val": ["c"]}
    assert read_split(tmp_path / "split.json") == RunSplit(train=["a", "b"], val=["c"])
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"]}))
    with pytest.raises(CorruptArtifactError, match="lacks the 'train' and 'val' lists"):
        read_split(tmp_path / "split.json")


def test_the_fixture_run_is_written_by_the_writers(tiny_run):
    config = read_config(tiny_run / "config.json")
    assert json.loads((tiny_run / "config.json").read_text())["format"] == CONFIG_FORMAT
    assert config.options["image_size"] == 32 and read_split(tiny_run / "split.json").val == ["id_4", "id_5"]
