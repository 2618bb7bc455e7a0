"""The match threshold: chosen at a stated operating point, with bootstrap intervals, refused
when measured on too few identities, kept in one place (<run>/calibration.json) and never
replaced by an evaluation of the identities the model trained on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import build_untrained_run, write_identity_folders
from test_index_cli import invoke
from test_index_engine import build, copy_run

from siamcli.evaluation.calibrate import MIN_IDENTITIES, calibrate
from siamcli.evaluation.verification import pair_distances, verify


def _clusters(identities: int, per_identity: int, spread: float, seed: int = 0):
    """Unit vectors around one random centre per identity: (vectors, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, 16))
    vectors = np.repeat(centres, per_identity, axis=0) + rng.normal(scale=spread, size=(identities * per_identity, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.repeat([f"p{i}" for i in range(identities)], per_identity)


def _calibrated(identities: int, per_identity: int = 6, spread: float = 0.6, target_far=None, seed: int = 0):
    vectors, labels = _clusters(identities, per_identity, spread, seed)
    pairs = pair_distances(vectors, labels)
    return calibrate(pairs, verify(pairs), target_far=target_far, seed=seed), pairs


def test_too_few_identities_give_an_unreliable_threshold():
    # The reported false match: 18 images of 2 people. With one pair of people behind every
    # different-identity pair, no interval can be estimated: the threshold is refused.
    few, _ = _calibrated(2, per_identity=9)
    assert not few.reliable and "2 identities" in few.reason and str(MIN_IDENTITIES) in few.reason
    many, _ = _calibrated(40, per_identity=9)
    assert many.reliable and many.reason == ""


def test_the_interval_narrows_as_identities_grow():
    ten, _ = _calibrated(10, per_identity=9)
    forty, _ = _calibrated(40, per_identity=9)
    for calibration in (ten, forty):
        assert calibration.far_ci95[0] <= calibration.far <= calibration.far_ci95[1]
    width = lambda c: c.far_ci95[1] - c.far_ci95[0]  # noqa: E731
    assert 0 < width(forty) < width(ten)


def test_target_far_threshold_lets_through_at_most_that_share_of_different_pairs():
    calibration, pairs = _calibrated(30, target_far=0.01)
    assert calibration.operating_point == "far" and calibration.target_far == 0.01
    false_matches = int(np.sum(pairs.different <= calibration.threshold))
    assert false_matches == int(np.floor(0.01 * len(pairs.different)))  # as many as allowed, no more
    assert calibration.far == pytest.approx(false_matches / len(pairs.different))
    assert np.sum(pairs.different <= np.nextafter(calibration.threshold, np.inf)) > false_matches  # the largest such threshold
    eer, _ = _calibrated(30)
    assert eer.operating_point == "eer" and calibration.threshold < eer.threshold  # a stricter point than the EER here


def test_a_target_far_too_small_to_measure_is_unreliable():
    calibration, pairs = _calibrated(12, target_far=1e-6)
    assert not calibration.reliable and "cannot be measured" in calibration.reason


def test_bootstrap_interval_is_seeded_and_covers_the_rate():
    first, _ = _calibrated(15, seed=3)
    again, _ = _calibrated(15, seed=3)
    assert first.far_ci95 == again.far_ci95 and first.frr_ci95 == again.frr_ci95
    assert first.frr_ci95[0] <= first.frr <= first.frr_ci95[1]


@pytest.mark.slow
def test_a_held_out_calibration_on_two_identities_puts_no_match_column_on_queries(tmp_path, tiny_run):
    """The reported false match: a threshold from 18 images marked a man's photo as a match."""
    run, data = copy_run(tiny_run, tmp_path)  # held out: id_4 and id_5
    result = invoke("evaluate", "--model", run, "--no-baselines", "--projection", "pca")
    assert result.exit_code == 0, result.stderr
    assert "not reliable" in result.stdout and "2 identities" in result.stdout
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["reliable"] is False and calibration["provenance"]["identities"] == ["id_4", "id_5"]
    build(run, data)
    answered = invoke("query", data / "id_0" / "img_0.png", "--model", run, "--json")
    assert answered.exit_code == 0 and "match" not in json.loads(answered.stdout)[0]["results"][0]
    assert "not reliable" in answered.stderr


@pytest.mark.slow
def test_enough_held_out_identities_calibrate_and_training_identities_never_replace_it(tmp_path):
    data = write_identity_folders(tmp_path / "data", identities=14, per_identity=6, size=32)
    run = build_untrained_run(tmp_path / "run", data, val=[f"id_{i}" for i in range(2, 14)], train=["id_0", "id_1"])
    result = invoke("evaluate", "--model", run, "--no-baselines", "--projection", "pca", "--target-far", "0.05", "--json")
    assert result.exit_code == 0, result.stderr
    held_out = json.loads((run / "calibration.json").read_text())
    assert held_out["reliable"] is True and held_out["operating_point"] == "far" and held_out["far"] <= 0.05
    assert held_out["identities"] == 12 and json.loads(result.stdout)["calibration"]["threshold"] == held_out["threshold"]
    before = (run / "eval" / "metrics.json").read_bytes()

    copy = shutil.copytree(data, tmp_path / "copy")  # the training folder, elsewhere: still training identities
    closed = invoke("evaluate", copy, "--model", run, "--no-baselines", "--projection", "pca")
    assert closed.exit_code == 0, closed.stderr
    assert "left as it was" in closed.stderr
    assert json.loads((run / "calibration.json").read_text()) == held_out
    assert (run / "eval" / "metrics.json").read_bytes() == before  # the held-out report is kept
    assert (run / "eval-copy" / "metrics.json").is_file()


@pytest.mark.parametrize("rate, words", [
    (0.0, "none of the 1,215 pairs is matched"),
    (0.13, "about 1 in 8 pairs is matched"),
    (0.091, "about 1 in 11 pairs is matched"),
    (0.0012, "about 1 in 830 pairs is matched"),
    (0.001, "about 1 in 1,000 pairs is matched"),
    (0.32, "about 32 % of pairs are matched"),
    (1.0, "every pair is matched"),
])
def test_an_error_rate_in_words(rate, words):
    """Finding 12: "reliable" beside a 13 % EER said nothing of what that means for one comparison."""
    from siamcli.calibration import share_in_words

    assert share_in_words(rate, 1215, "pair", "matched") == words


def test_a_calibration_says_both_error_rates_in_words():
    calibration, _ = _calibrated(40, per_identity=9)
    text = calibration.in_words()
    assert text.startswith("at this threshold ") and " different-identity pairs " in text and " same-identity pair" in text
    assert text.endswith("missed") and "called a match and" in text
