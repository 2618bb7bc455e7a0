"""`--model imagenet`: ResNet50 features with no training, through the real CLI.

The weights are a ResNet50(include_top=False) file made here (conftest.resnet_weights, 32 px),
passed as `imagenet@32:PATH`; the real ImageNet download is only attempted once, offline, where
it is refused at once (KERAS_HOME points at an empty folder and there is no network).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli, write_identity_folders
from typer.testing import CliRunner

runner = CliRunner()


def invoke(*args):
    from siamcli.cli.app import app

    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def gallery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cached run lands in ./runs, as train's runs do
    return write_identity_folders(tmp_path / "gallery", identities=3, per_identity=2, size=40)


def test_index_with_imagenet_embeds_as_the_untrained_backbone_and_query_answers(gallery, tmp_path, resnet_weights):
    from siamcli.evaluation.baselines import UNTRAINED_BACKBONE, baseline_features
    from siamcli.hashing import file_sha256
    from siamcli.index.store import load_index

    spec = f"imagenet@32:{resnet_weights}"
    built = invoke("index", gallery, "--model", spec, "--out", tmp_path / "idx", "--json")
    assert built.exit_code == 0, built.stderr
    summary = json.loads(built.stdout)
    model = tmp_path / "runs" / f"imagenet-32-{file_sha256(resnet_weights)[:12]}" / "model.keras"
    assert summary["model"] == str(model.resolve()) and summary["count"] == 6
    index = load_index(tmp_path / "idx")
    assert index.manifest["model_fingerprint"] == file_sha256(model) and index.dim == 2048

    refs, items = zip(*index.entries)
    paths = [item.path for item in items]
    expected = baseline_features(paths, 32, {"weights": str(resnet_weights)}).features[UNTRAINED_BACKBONE]
    np.testing.assert_allclose(index.vectors(list(refs)), expected, atol=1e-5)

    answer = invoke("query", paths[0], "--index", tmp_path / "idx", "--model", spec, "--k", "2", "--json")
    assert answer.exit_code == 0, answer.stderr
    assert paths[0] in answer.stdout  # an image is its own nearest neighbour


def test_the_cached_run_is_reused_not_rebuilt(gallery, tmp_path, resnet_weights):
    spec = f"imagenet@32:{resnet_weights}"
    assert invoke("index", gallery, "--model", spec, "--out", tmp_path / "a", "--json").exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    before = (run / "model.keras").stat().st_mtime_ns, (run / "config.json").stat().st_mtime_ns
    again = invoke("index", gallery, "--model", spec, "--out", tmp_path / "b", "--json")
    assert again.exit_code == 0, again.stderr
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [run.name]
    assert ((run / "model.keras").stat().st_mtime_ns, (run / "config.json").stat().st_mtime_ns) == before
    assert json.loads((run / "config.json").read_text())["weights"] == str(resnet_weights)


def test_offline_without_a_weights_file_one_line_names_the_path_option(gallery, tmp_path):
    result = run_cli("index", str(gallery), "--model", "imagenet", "--out", str(tmp_path / "idx"), cwd=tmp_path,
                     env={"KERAS_HOME": str(tmp_path / "empty_keras"), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be downloaded (offline)" in result.stderr and "--model imagenet:PATH" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half-built is left to be reused


def test_a_missing_weights_file_or_a_bad_size_is_one_line(gallery, tmp_path):
    missing = invoke("index", gallery, "--model", f"imagenet:{tmp_path / 'nope.weights.h5'}", "--json")
    assert missing.exit_code == 2 and "nope.weights.h5 not found" in missing.stderr, missing.stderr
    bad = invoke("index", gallery, "--model", "imagenet@big", "--json")
    assert bad.exit_code == 2 and "imagenet@224" in bad.stderr, bad.stderr
