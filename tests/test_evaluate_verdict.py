"""Did training help? `siamcli evaluate`'s start-model column and its closing verdict line, and
what the match threshold's error rates mean in words (issue 21, findings 4 and 12).

The tiny run's model is an untrained 16-d network: on `hard` data (identities that differ by a
faint pattern under heavy noise) raw pixels rank far better than it, so the verdict must say
that training did not help. Its start.keras is a copy of model.keras: the start column must
then score exactly what the trained column does.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import identity_pattern
from PIL import Image
from test_index_engine import copy_run
from typer.testing import CliRunner

runner = CliRunner()
RETRIEVAL_KEYS = ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
VERDICT_KEYS = ["best_baseline", "trained_map_at_r", "baseline_map_at_r", "difference", "ci95", "identities", "helped", "text"]


def _app():
    from siamcli.cli.app import app

    return app


def write_hard_folders(root, identities: int = 10, per_identity: int = 5, size: int = 40, seed: int = 0):
    """root/p<i>/<j>.png: one shared picture plus 15 % of a per-identity one, under noise σ 30.
    10 identities × 5 images: 100 same-identity pairs, enough for a reliable threshold."""
    rng = np.random.default_rng(seed)
    common = identity_pattern(99, size)
    for i in range(identities):
        folder = root / f"p{i}"
        folder.mkdir(parents=True)
        picture = 0.85 * common + 0.15 * identity_pattern(i, size)
        for j in range(per_identity):
            noisy = np.clip(picture + rng.normal(0, 30, picture.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def with_start(tiny_run, tmp_path_factory):
    """(run with start.keras = its model.keras, hard data, CLI result in text mode, metrics.json)."""
    base = tmp_path_factory.mktemp("verdict")
    run, _ = copy_run(tiny_run, base, with_data=False)
    shutil.copy(run / "model.keras", run / "start.keras")
    data = write_hard_folders(base / "hard")
    result = runner.invoke(_app(), ["evaluate", str(data), "--model", str(run), "--out", str(base / "e"), "--projection", "pca"])
    assert result.exit_code == 0, result.output
    return run, data, result, json.loads((base / "e" / "metrics.json").read_text())


def test_the_start_model_is_a_column_beside_the_baselines(with_start):
    _, _, _, metrics = with_start
    assert list(metrics["baselines"]) == ["start_model", "untrained_backbone", "raw_pixels"]
    # start.keras is the very network of model.keras: its column scores what the trained one does.
    assert metrics["baselines"]["start_model"] == {key: metrics[key] for key in RETRIEVAL_KEYS}


def test_the_verdict_line_says_training_did_not_help_when_raw_pixels_rank_better(with_start):
    _, _, result, metrics = with_start
    verdict = metrics["verdict"]
    assert list(verdict) == VERDICT_KEYS
    maps = {name: scores["map_at_r"] for name, scores in metrics["baselines"].items()}
    assert verdict["best_baseline"] == max(maps, key=maps.get) == "raw_pixels"
    assert verdict["trained_map_at_r"] == metrics["map_at_r"] and verdict["baseline_map_at_r"] == maps["raw_pixels"]
    assert verdict["difference"] == pytest.approx(metrics["map_at_r"] - maps["raw_pixels"])
    low, high = verdict["ci95"]
    assert low <= verdict["difference"] <= high < 0  # clearly worse: the whole interval below 0
    assert verdict["helped"] is False and verdict["identities"] == 10
    assert verdict["text"].startswith("training did not help on this data") and "raw pixels" in verdict["text"]
    last = result.stdout.rstrip("\n").splitlines()[-1]
    assert last == f"verdict: {verdict['text']}"  # the output ends with the verdict, one line


def test_the_verdict_is_reproducible(with_start, tmp_path):
    run, data, _, metrics = with_start
    again = runner.invoke(_app(), ["evaluate", str(data), "--model", str(run), "--out", str(tmp_path / "e"), "--projection", "pca", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["verdict"] == metrics["verdict"]


def test_a_reliable_threshold_says_what_its_error_rates_mean(with_start):
    _, _, result, metrics = with_start
    calibration = metrics["calibration"]
    assert calibration["reliable"] is True  # 10 identities, 100 same-identity pairs
    line = next(line for line in result.stdout.splitlines() if line.startswith("calibration:"))
    share = r"about (?:1 in (\d+) {0}s is|(\d+) % of {0}s are)"
    match = re.fullmatch(f"calibration: reliable: at this threshold {share.format('different-identity pair')} called a match "
                         f"and {share.format('same-identity pair')} missed", line)
    assert match, line
    stated = match.groups()
    for one_in, percent, rate in ((*stated[:2], calibration["far"]), (*stated[2:], calibration["frr"])):
        if one_in:
            assert abs(int(one_in) - 1 / rate) <= 0.5  # "1 in N": N is 1 / rate, rounded
        else:
            assert abs(int(percent) - 100 * rate) <= 0.5


def test_a_run_of_an_earlier_release_has_no_start_column_and_says_so(tiny_run, tmp_path):
    run, _ = copy_run(tiny_run, tmp_path, with_data=False)  # no start.keras, as before this release
    result = runner.invoke(_app(), ["evaluate", "--model", str(run), "--out", str(tmp_path / "e"), "--projection", "pca", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert "start model not recorded (trained by an earlier release)" in result.stderr
    assert list(document["baselines"]) == ["untrained_backbone", "raw_pixels"]
    verdict = document["verdict"]
    assert verdict["best_baseline"] in ("untrained_backbone", "raw_pixels")
    # Every model ranks the two held-out identities perfectly: no difference to find.
    assert verdict["difference"] == 0 and verdict["ci95"] == [0, 0] and verdict["helped"] is None
    assert verdict["text"].startswith("no clear difference")


# The bootstrap itself, on per-query AP@R arrays with a known answer.
def judge(*args, **kwargs):
    from siamcli.evaluation.verdict import judge

    return judge(*args, **kwargs)


def _two_identities(trained_a, trained_b, baseline=0.5, queries=10):
    labels = np.repeat(["a", "b"], queries)
    trained = np.concatenate([np.full(queries, trained_a), np.full(queries, trained_b)])
    return trained, np.full(2 * queries, baseline), labels


def test_the_interval_resamples_identities_not_queries():
    # Identity a gains 0.5, b loses 0.5: draws {a,a} {a,b} {b,b} give +0.5, 0, -0.5. Resampling the
    # 20 queries instead would give a far narrower interval (about ±0.22).
    trained, baseline, labels = _two_identities(1.0, 0.0)
    verdict = judge(trained, {"raw_pixels": baseline}, labels, seed=0)
    assert verdict.difference == pytest.approx(0.0)
    assert verdict.ci95 == pytest.approx((-0.5, 0.5))
    assert verdict.helped is None and verdict.text.startswith("no clear difference")


def test_the_bootstrap_is_paired():
    # Better by 0.1 on every query: each draw's difference is exactly 0.1. Unpaired draws of the
    # two models would scatter around it.
    rng = np.random.default_rng(3)
    labels = np.repeat([f"id{i}" for i in range(8)], 4)
    baseline = rng.uniform(0.2, 0.8, len(labels))
    verdict = judge(baseline + 0.1, {"untrained_backbone": baseline}, labels, seed=5)
    assert verdict.ci95 == pytest.approx((0.1, 0.1)) and verdict.helped is True
    assert verdict.text.startswith("training helped")


def test_the_best_baseline_is_chosen_by_map_at_r_and_non_queries_are_left_out():
    labels = np.array(["a", "a", "b", "b", "c"])  # c has one image: not a query (AP@R is nan)
    trained = np.array([0.5, 0.5, 0.5, 0.5, np.nan])
    baselines = {"start_model": np.array([0.9, 0.9, 0.8, 0.8, np.nan]), "raw_pixels": np.array([0.6, 0.6, 0.6, 0.6, np.nan])}
    verdict = judge(trained, baselines, labels, seed=0, start_model="runs/x/start.keras")
    assert verdict.best_baseline == "start_model" and verdict.baseline_map_at_r == pytest.approx(0.85)
    assert verdict.identities == 2 and verdict.helped is False
    # The advice names a command that works as printed, every option given.
    assert "siamcli index GALLERY_DIR --model runs/x/start.keras --out INDEX_DIR" in verdict.text
    assert judge(trained, {}, labels) is None  # no baseline scored: no verdict


# docs/evaluate.md (finding 13): it quoted the demo's map_at_r 0.9118 and threshold 0.0088, which
# the demo does not give. It now lists the keys metrics.json holds, and quotes only numbers a
# documented command prints.
DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluate.md"


def _key_table(text: str, heading: str) -> list[str]:
    """The `key` column of the first table after `heading`."""
    rest = text[text.index(heading):].splitlines()[1:]
    rows = [line for line in rest[next(i for i, line in enumerate(rest) if line.startswith("| key")) + 2:]]
    return [re.match(r"\| `(\w+)` \|", line).group(1) for line in rows[: next(i for i, line in enumerate(rows) if not line.startswith("|"))]]


def test_the_docs_name_exactly_the_keys_metrics_json_holds(with_start):
    *_, metrics = with_start
    text = DOC.read_text(encoding="utf-8")
    assert _key_table(text, "## `metrics.json` (and `--json`)") == list(metrics)
    assert _key_table(text, "`calibration`:") == list(metrics["calibration"])
    assert _key_table(text, "`verdict`:") == list(metrics["verdict"])
    baselines_row = next(line for line in text.splitlines() if line.startswith("| `baselines` |"))
    assert re.findall(r"`(\w+)`", baselines_row)[1:4] == list(metrics["baselines"])


def test_the_docs_quote_only_numbers_the_readmes_demo_output_shows():
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    quoted = set(re.findall(r"(?<![`\w.])0\.\d{3,}\b(?!`)", DOC.read_text(encoding="utf-8")))  # `0.001`: an option's value
    assert quoted and all(number in readme for number in quoted), sorted(number for number in quoted if number not in readme)
