"""`siamcli verify`: a pair's cosine similarity and its match decision (the run's calibration,
--threshold, or none and why), pairs files with and without a `same` column (LFW-style scores),
the JSON contract, and every bad input → one line, exit 2 (a bad row of a pairs file: skipped)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_test_calibration
from sklearn.metrics import roc_auc_score
from test_index_cli import invoke, one_line_error
from test_index_engine import copy_run
from test_light_model import give_light_model

pytestmark = pytest.mark.slow  # every test embeds with the tiny ResNet50 run

CONTRACT = {"a", "b", "similarity", "match", "threshold"}


@pytest.fixture(scope="module")
def faces(tmp_path_factory, tiny_run):
    """(run, data): a writable copy of the tiny run with its light model, and its 6 × 5 images (id_<i>/img_<j>.png), no calibration."""
    run, data = copy_run(tiny_run, tmp_path_factory.mktemp("verify"))
    give_light_model(run)  # as the trainer writes it: verify embeds without TensorFlow
    return run, data


@pytest.fixture
def calibrated(tmp_path, tiny_run):
    """(run, data) with a reliable calibration at squared distance 0.5, i.e. cosine similarity 0.75."""
    run, data = copy_run(tiny_run, tmp_path)
    give_light_model(run)
    write_test_calibration(run, 0.5)
    return run, data


def verify_json(*args):
    result = invoke("verify", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def write_pairs(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_same_image_has_similarity_one_and_matches_at_the_calibrated_threshold(calibrated):
    run, data = calibrated
    image = data / "id_0" / "img_0.png"
    answer, _ = verify_json(image, image, "--model", run)
    assert CONTRACT <= set(answer) and answer["a"] == answer["b"] == str(image)
    assert answer["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert answer["match"] is True and answer["threshold"] == pytest.approx(0.75) and answer["threshold_source"] == "calibration"
    # the rates calibration.json measured at that threshold, with their intervals
    assert (answer["far"], answer["far_ci95"], answer["frr"], answer["frr_ci95"]) == (0.01, [0.0, 0.02], 0.01, [0.0, 0.02])
    text = invoke("verify", image, image, "--model", run)
    assert text.exit_code == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0] == "similarity 1.000000" and lines[1] == "match: yes"
    assert "false-match rate 1.0 % (95 % interval 0.0–2.0 %)" in lines[2] and "on 12 identities" in lines[2]


def test_threshold_overrides_the_calibration_and_reports_no_rates(calibrated):
    run, data = calibrated
    a, b = data / "id_0" / "img_0.png", data / "id_3" / "img_1.png"
    calibrated_answer, _ = verify_json(a, b, "--model", run)
    similarity = calibrated_answer["similarity"]
    assert calibrated_answer["match"] is (similarity >= 0.75)
    for threshold, expected in ((similarity - 1e-4, True), (similarity + 1e-4, False)):
        answer, _ = verify_json(a, b, "--model", run, "--threshold", str(threshold))
        assert answer["match"] is expected and answer["threshold"] == pytest.approx(threshold)
        assert answer["threshold_source"] == "option" and "far" not in answer and "frr" not in answer
    text = invoke("verify", a, b, "--model", run, "--threshold", "-1")
    assert text.exit_code == 0 and "match: yes" in text.stdout
    assert "set by --threshold; no error rates: they are measured only at the run's calibrated threshold" in text.stdout


@pytest.mark.parametrize("calibration, why", [
    (None, "not calibrated"),
    ("unreliable", "not reliable (measured on 2 identities"),
    ("other model", "was measured on another model"),
])
def test_without_a_reliable_calibration_there_is_no_decision_and_one_line_says_why(tmp_path, tiny_run, calibration, why):
    run, data = copy_run(tiny_run, tmp_path)
    give_light_model(run)
    if calibration == "unreliable":
        write_test_calibration(run, 0.5, reliable=False)
    elif calibration == "other model":
        write_test_calibration(run, 0.5, model_sha256="0" * 64)
    image = data / "id_1" / "img_2.png"
    answer, stderr = verify_json(image, image, "--model", run)
    assert answer["match"] is None and answer["threshold"] is None and answer["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert stderr.count("\n") == 1 and stderr.startswith("warning: no match decision: "), stderr
    assert why in stderr and f"--model {run}`" in stderr and "--threshold T" in stderr, stderr
    assert answer["reason"] == stderr[len("warning: "):].strip()


def test_pairs_file_resolves_relative_paths_from_its_folder_and_keeps_the_order(faces, tmp_path):
    run, data = faces
    absolute = data / "id_2" / "img_0.png"
    csv = write_pairs(data / "pairs.csv", ["a,b", "id_0/img_0.png,id_0/img_0.png", f"id_1/img_0.png,{absolute}", "id_2/img_1.png, id_2/img_0.png"])
    answers, _ = verify_json("--pairs", csv, "--model", run, "--threshold", "0.5")
    assert [(r["a"], r["b"], r["line"]) for r in answers] == [
        ("id_0/img_0.png", "id_0/img_0.png", 2), ("id_1/img_0.png", str(absolute), 3), ("id_2/img_1.png", "id_2/img_0.png", 4)]
    for answer in answers:
        assert CONTRACT <= set(answer) and "same" not in answer and answer["threshold"] == 0.5
        assert answer["match"] is (answer["similarity"] >= 0.5)
    assert answers[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    single, _ = verify_json(data / "id_1" / "img_0.png", absolute, "--model", run)  # the same pair on its own
    assert single["similarity"] == pytest.approx(answers[1]["similarity"], abs=1e-6)


def test_pairs_with_a_same_column_are_scored_lfw_style(calibrated, tmp_path):
    run, data = calibrated
    lines = ["a,b,same"]
    lines += [f"id_{i}/img_0.png,id_{i}/img_{j}.png,1" for i in range(6) for j in (1, 2)]
    lines += [f"id_{i}/img_0.png,id_{(i + 1) % 6}/img_3.png,0" for i in range(6)]
    csv = write_pairs(data / "pairs.csv", lines)
    scores_file = tmp_path / "scores.json"
    done = run_cli("verify", "--pairs", str(csv), "--model", str(run), "--json", "--scores-json", str(scores_file))
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)  # stdout holds the list and nothing else
    assert len(answers) == 18 and all(CONTRACT | {"same"} <= set(r) for r in answers)
    similarity = np.array([r["similarity"] for r in answers])
    same = np.array([r["same"] for r in answers])
    assert same.sum() == 12 and all(r["threshold"] == pytest.approx(0.75) for r in answers)
    scores = json.loads(scores_file.read_text())
    assert (scores["pairs"], scores["same_pairs"], scores["different_pairs"]) == (18, 12, 6)
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(same, similarity), abs=1e-9)
    assert scores["accuracy"] == pytest.approx(np.mean((similarity >= 0.75) == same), abs=1e-9)
    assert scores["false_match_rate"] == pytest.approx(np.mean(similarity[~same] >= 0.75), abs=1e-9)
    # at the EER threshold the two error rates on these pairs are equal (up to one pair of each kind)
    far = np.mean(similarity[~same] >= scores["eer_threshold"])
    frr = np.mean(similarity[same] < scores["eer_threshold"])
    assert 0.0 <= scores["eer"] <= 1.0 and abs(far - frr) <= 1 / 6 + 1 / 12
    assert any(line.startswith("scores on 18 pairs (12 same, 6 different): ROC AUC") for line in done.stderr.splitlines()), done.stderr


def test_a_row_whose_image_does_not_decode_is_skipped_and_named(faces, tmp_path):
    run, data = faces
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a picture")
    csv = write_pairs(tmp_path / "pairs.csv", ["a,b", f"{data}/id_0/img_0.png,{data}/id_0/img_1.png", f"{data}/id_0/img_0.png,broken.png",
                                               f"gone.png,{data}/id_1/img_1.png"])
    answers, stderr = verify_json("--pairs", csv, "--model", run)
    assert [r["line"] for r in answers] == [2]
    assert str(broken) in stderr and "gone.png" in stderr and "line(s) 3, 4" in stderr, stderr
    only_bad = write_pairs(tmp_path / "bad.csv", ["a,b", f"{data}/id_0/img_0.png,broken.png"])
    one_line_error(invoke("verify", "--pairs", only_bad, "--model", run), "none of the pairs", str(broken))


def _bad_inputs(data: Path, tmp_path: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    """name → (verify's arguments, what its one-line error must say)."""
    image = str(data / "id_0" / "img_0.png")
    undecodable = tmp_path / "undecodable.png"
    undecodable.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    files = {
        "no_ab.csv": "left,right\nx.png,y.png\n", "same.csv": f"a,b,same\n{image},{image},yes\n", "empty.csv": "",
        "header.csv": "a,b,same\n", "blank.csv": f"a,b\n{image},\n", "no_same.csv": f"a,b\n{image},{image}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    csv = lambda name: ["--pairs", str(tmp_path / name)]  # noqa: E731
    return {
        "missing image": ([image, str(tmp_path / "nope.png")], ("nope.png not found",)),
        "undecodable image": ([image, str(undecodable)], ("cannot read image", str(undecodable))),
        "a folder": ([image, str(data)], ("is not a file",)),
        "no a/b columns": (csv("no_ab.csv"), ("has columns left,right, not a and b",)),
        "same not 0/1": (csv("same.csv"), ("line 2: same is 'yes'", "give 1 (same identity) or 0")),
        "empty csv": (csv("empty.csv"), ("is empty",)),
        "header only": (csv("header.csv"), ("holds no pairs",)),
        "empty cell": (csv("blank.csv"), ("line 2: column b is empty",)),
        "missing csv": (csv("absent.csv"), ("absent.csv not found",)),
        "threshold out of range": ([image, image, "--threshold", "1.5"], ("--threshold 1.5 is not a cosine similarity",)),
        "one image": ([image], ("give two images (got 1)",)),
        "images and pairs": ([image, image, *csv("header.csv")], ("not both",)),
        "scores without same": ([*csv("no_same.csv"), "--scores-json", str(tmp_path / "s.json")], ("--scores-json needs",)),
    }


BAD = ["missing image", "undecodable image", "a folder", "no a/b columns", "same not 0/1", "empty csv", "header only", "empty cell",
       "missing csv", "threshold out of range", "one image", "images and pairs", "scores without same"]


@pytest.mark.parametrize("case", BAD)
def test_a_bad_input_is_one_line_and_exit_2(faces, tmp_path, case):
    run, data = faces
    args, needles = _bad_inputs(data, tmp_path)[case]
    one_line_error(invoke("verify", *args, "--model", run), *needles)


def test_the_engine_takes_arrays_as_well_as_paths(faces):
    """What the HTTP service and the notebook API call: arrays give the paths' similarity, through the
    run's light model or a Keras model alike."""
    from siamcli.data.decode import decode_image
    from siamcli.pairs.verify import decision_for, open_model, verify_images

    run, data = faces
    opened = open_model(str(run), 0.5)
    a, b = str(data / "id_0" / "img_0.png"), str(data / "id_4" / "img_2.png")
    from_paths = verify_images(opened.embedder, a, b, opened.decision)
    from_arrays = verify_images(opened.embedder, decode_image(a), decode_image(b), opened.decision)
    assert from_arrays.similarity == pytest.approx(from_paths.similarity, abs=1e-4)
    assert (from_arrays.a, from_arrays.b) == ("image a", "image b") and from_arrays.match is (from_arrays.similarity >= 0.5)
    assert decision_for(run, "0" * 64).threshold is None  # no calibration for that model
    from siamcli.models.embedding import load_embedding_model  # a caller's own Keras model (the service's, the API's)

    keras_model = load_embedding_model(opened.path)
    by_keras = verify_images(keras_model, decode_image(a), b, opened.decision)
    assert by_keras.similarity == pytest.approx(from_paths.similarity, abs=1e-4)
