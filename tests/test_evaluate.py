"""`siamcli evaluate` end to end: the files, an independent re-check from them, the CLI.

Uses the session's tiny untrained run (32 px, 16-d); the run itself is never written to.
"""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, write_identity_folders
from PIL import Image
from sklearn import metrics as skm
from test_evaluate_plots import assert_png
from test_metrics import brute_force_retrieval
from typer.testing import CliRunner

runner = CliRunner()
METRIC_KEYS = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r", "accuracy", "macro_f1", "roc_auc", "eer", "threshold"]
FILES = ["metrics.json", "report.json", "per_class.csv", "confusion.csv", "confusion.png", "roc.png",
         "projection.png", "errors.png", "embeddings.npy", "labels.csv"]


def _app():
    from siamcli.cli.app import app

    return app


@pytest.fixture(scope="module")
def messy_data(tmp_path_factory):
    """5 identities × 4 images, one single-image identity, a text file and an undecodable 'image'."""
    root = write_identity_folders(tmp_path_factory.mktemp("eval") / "data", identities=5, per_identity=4, size=40, seed=3)
    (root / "lonely").mkdir()
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(root / "lonely" / "only.png")
    (root / "id_0" / "notes.txt").write_text("not an image")
    (root / "id_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    return root


@pytest.fixture(scope="module")
def evaluated(tiny_run, messy_data, tmp_path_factory):
    from siamcli.evaluation.report import EvaluateOptions, evaluate

    out = tmp_path_factory.mktemp("evaluated") / "eval"
    report = evaluate(str(tiny_run), str(messy_data), str(out), EvaluateOptions(ks=(1, 3)))
    return report, out


def test_writes_every_file_with_the_documented_shapes(evaluated):
    report, out = evaluated
    for name in FILES:
        assert (out / name).is_file(), name
    for name in ("confusion.png", "roc.png", "projection.png", "errors.png"):
        assert_png(out / name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == METRIC_KEYS + ["baselines", "calibration", "verdict"]
    calibration = metrics["calibration"]
    assert calibration["operating_point"] == "eer" and calibration["threshold"] == metrics["threshold"]
    assert calibration["reliable"] is False and "5 identities" in calibration["reason"]  # 5 identities with 2+ images
    assert calibration["far_ci95"][0] <= calibration["far"] <= calibration["far_ci95"][1]
    assert set(metrics["recall_at_k"]) == {"1", "3"}
    assert set(metrics["baselines"]) == {"untrained_backbone", "raw_pixels"}
    for baseline in metrics["baselines"].values():
        assert list(baseline) == ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    assert isinstance(metrics["threshold"], float) and 0 <= metrics["threshold"] <= 4
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == ["path", "label"]
    assert len(labels) == 21 and "lonely" in set(labels["label"])  # 5 × 4 + 1; broken.png is not there
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (21, 16) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    info = json.loads((out / "report.json").read_text())
    skipped = {os.path.basename(item["path"]) for item in info["skipped_files"]}
    assert skipped == {"notes.txt", "broken.png"}
    assert info["images"] == 21 and info["queries"] == 20 and info["single_image_identities"] == 1
    assert not info["verification"]["sampled"] and info["verification"]["all_pairs"] == 21 * 20 // 2
    assert list(pd.read_csv(out / "per_class.csv").columns) == ["label", "precision", "recall", "f1", "support"]


def test_metrics_recomputed_from_the_files_by_an_independent_implementation_agree(evaluated):
    _, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    embeddings = np.load(out / "embeddings.npy")
    labels = pd.read_csv(out / "labels.csv")["label"].to_numpy().astype(str)
    reference = brute_force_retrieval(embeddings, labels, (1, 3))
    assert metrics["precision_at_1"] == pytest.approx(reference["precision_at_1"])
    assert metrics["recall_at_k"] == pytest.approx({str(k): v for k, v in reference["recall_at_k"].items()})
    assert metrics["r_precision"] == pytest.approx(reference["r_precision"])
    assert metrics["map_at_r"] == pytest.approx(reference["map_at_r"])

    queries = sorted(reference["nearest"])
    truth = labels[queries]
    predicted = labels[[reference["nearest"][i] for i in queries]]
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    assert metrics["macro_f1"] == pytest.approx(skm.f1_score(truth, predicted, average="macro", zero_division=0))
    classes = sorted(set(truth) | set(predicted))
    sk_report = skm.classification_report(truth, predicted, labels=classes, output_dict=True, zero_division=0)
    per_class = pd.read_csv(out / "per_class.csv", dtype={"label": str})
    assert per_class["label"].tolist() == classes
    for row in per_class.itertuples(index=False):
        expected = sk_report[row.label]
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"], expected["support"])
        )
    confusion = pd.read_csv(out / "confusion.csv", dtype={"label": str}).set_index("label")
    np.testing.assert_array_equal(confusion.loc[classes, classes].to_numpy(), skm.confusion_matrix(truth, predicted, labels=classes))

    x = embeddings.astype(np.float64)
    i, j = np.triu_indices(len(x), 1)
    distances = ((x[i] - x[j]) ** 2).sum(1)
    assert metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(labels[i] == labels[j], -distances))
    fpr, tpr, thresholds = skm.roc_curve(labels[i] == labels[j], -distances)
    # The EER lies where the false-match and false-non-match rates cross.
    crossing = np.argmax(1 - tpr <= fpr)
    assert min(fpr[crossing - 1], 1 - tpr[crossing]) - 1e-9 <= metrics["eer"] <= max(fpr[crossing], 1 - tpr[crossing - 1]) + 1e-9


def test_raw_pixel_baseline_is_the_pixels_compared_by_euclidean_distance(evaluated):
    """Recomputed without siamcli: each file decoded by Pillow, resized by TensorFlow's bilinear
    antialiased resize (the op the model's pipeline documents), scaled to [0, 1], flattened and
    ranked by squared Euclidean distance in the numpy brute force."""
    import tensorflow as tf

    report, out = evaluated
    labels = pd.read_csv(out / "labels.csv")
    size = report.image_size
    pixels = []
    for path in labels["path"]:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), np.float32)
        resized = tf.image.resize(rgb, (size, size), method="bilinear", antialias=True).numpy()
        pixels.append(resized.reshape(-1) / 255.0)
    reference = brute_force_retrieval(np.stack(pixels), labels["label"].to_numpy().astype(str), (1, 3))
    baseline = json.loads((out / "metrics.json").read_text())["baselines"]["raw_pixels"]
    assert baseline["precision_at_1"] == pytest.approx(reference["precision_at_1"], abs=1e-9)
    assert baseline["recall_at_k"] == pytest.approx({str(k): v for k, v in reference["recall_at_k"].items()}, abs=1e-9)
    assert baseline["r_precision"] == pytest.approx(reference["r_precision"], abs=1e-9)
    assert baseline["map_at_r"] == pytest.approx(reference["map_at_r"], abs=1e-9)
    # The scores are perfect on this data, so check the features themselves too: the baseline's
    # raw-pixel matrix is these pixels (the backbone baseline is skipped: its weights are "gone").
    from siamcli.evaluation.baselines import RAW_PIXELS, baseline_features

    features = baseline_features(labels["path"].tolist(), size, {"weights": str(out / "gone.weights.h5")})
    assert list(features.features) == [RAW_PIXELS]
    np.testing.assert_allclose(features.features[RAW_PIXELS], np.stack(pixels), rtol=0, atol=1e-6)


def test_cli_defaults_to_the_runs_held_out_identities_and_prints_only_json(tiny_run, tmp_path):
    run = _linked_run(tiny_run, tmp_path / "run")  # a held-out evaluation writes the run's calibration.json
    out = tmp_path / "eval"
    result = runner.invoke(_app(), ["evaluate", "--model", str(run), "--out", str(out), "--no-baselines", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document) == METRIC_KEYS + ["baselines", "calibration", "verdict"] and document["baselines"] == {}
    assert document["verdict"] is None  # --no-baselines: nothing to judge against
    assert json.loads((run / "calibration.json").read_text())["threshold"] == document["calibration"]["threshold"]
    assert set(pd.read_csv(out / "labels.csv")["label"]) == {"id_4", "id_5"}
    assert json.loads((out / "report.json").read_text())["held_out_identities"] is True
    assert document == json.loads((out / "metrics.json").read_text())
    assert not (run / "eval").exists()


def test_cli_on_an_explicit_folder_prints_the_tables(tiny_run, messy_data, tmp_path):
    result = runner.invoke(_app(), ["evaluate", str(messy_data), "--model", str(tiny_run), "--out", str(tmp_path / "e"),
                                    "--k", "1,3", "--k", "2", "--show", "3", "--no-baselines", "--projection", "pca"])
    assert result.exit_code == 0, result.output
    for text in ("Retrieval", "recall@2", "MAP@R", "worst first", "Confusion matrix", "threshold", "EER"):
        assert text in result.stdout
    assert "warning: skipped 2 file(s)" in result.stderr and "broken.png" in result.stderr
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics["recall_at_k"]) == {"1", "2", "3"}


@pytest.mark.parametrize("bad", ["0", "x", "1,-2", "1.5", ","])
def test_cli_rejects_bad_k_with_one_line(tiny_run, tmp_path, bad):
    result = runner.invoke(_app(), ["evaluate", "--model", str(tiny_run), "--out", str(tmp_path), "--k", bad])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "--k" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_cli_missing_run_or_data_exits_2(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(_app(), ["evaluate"])
    assert result.exit_code == 2 and "runs/latest" in result.stderr and result.stderr.count("\n") == 1
    result = runner.invoke(_app(), ["evaluate", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "not found" in result.stderr
    result = runner.invoke(_app(), ["evaluate", str(tmp_path / "no_such_dir"), "--model", str(tiny_run)])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    moved = _linked_run(tiny_run, tmp_path / "runs" / "moved", data_dir="gone/data")
    result = runner.invoke(_app(), ["evaluate", "--model", str(moved)])
    assert result.exit_code == 2 and "data_dir" in result.stderr and "pass DATA_DIR" in result.stderr


def test_cli_default_model_is_runs_latest_and_default_out_is_its_eval_folder(tiny_run, tmp_path, monkeypatch):
    run = _linked_run(tiny_run, tmp_path / "runs" / "r1")
    os.symlink("r1", tmp_path / "runs" / "latest")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(_app(), ["evaluate", "--no-baselines", "--projection", "pca", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "threshold" in metrics and metrics == json.loads(result.stdout)


def test_real_subprocess_prints_one_json_document_and_no_tensorflow_noise(tiny_run, tmp_path):
    run = _linked_run(tiny_run, tmp_path / "run")
    completed = run_cli("evaluate", "--model", str(run), "--out", str(tmp_path / "sub"), "--json",
                        "--no-baselines", "--projection", "pca", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert list(document) == METRIC_KEYS + ["baselines", "calibration", "verdict"]
    assert "oneDNN" not in completed.stderr and "cuda" not in completed.stderr.lower()
    assert (tmp_path / "sub" / "errors.png").is_file()


def _linked_run(source, target, data_dir=None):
    """A run directory that shares the fixture's model file (symlink) but owns its JSON files."""
    target.mkdir(parents=True)
    os.symlink(source / "model.keras", target / "model.keras")
    shutil.copy(source / "split.json", target / "split.json")
    config = json.loads((source / "config.json").read_text())
    if data_dir is not None:
        config["data_dir"] = data_dir
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_untrained_backbone_starts_where_the_run_started(tmp_path, monkeypatch):
    from siamcli.evaluation.baselines import backbone_start

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    choice, text = backbone_start({"weights": "none", "seed": 7})
    assert choice.kind == "none" and "seed 7" in text
    choice, text = backbone_start({"weights": "imagenet"})
    assert choice is None and "not cached" in text  # never downloaded during evaluation
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"")
    choice, _ = backbone_start({"weights": "imagenet"})
    assert choice.kind == "imagenet"
    choice, text = backbone_start({"weights": str(tmp_path / "gone.weights.h5")})
    assert choice is None and "gone" in text


def test_evaluating_the_training_identities_warns_that_it_is_closed_set(tiny_run, tmp_path):
    data = json.loads((tiny_run / "config.json").read_text())["data_dir"]
    result = runner.invoke(_app(), ["evaluate", data, "--model", str(tiny_run), "--out", str(tmp_path / "e"),
                                    "--no-baselines", "--projection", "pca", "--json"])
    assert result.exit_code == 0, result.output
    assert "4 of the evaluated identities were trained on" in result.stderr
    assert json.loads(result.stdout)["threshold"] is not None
