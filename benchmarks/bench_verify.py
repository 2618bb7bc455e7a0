"""`siamcli verify` on identities the model never saw: accuracy at the calibrated threshold.

ORL / AT&T faces, read from the folder named by SIAMCLI_ATT_FACES (s1 … s40, 10 photos each):
1. `siamcli train` on s1–s20 from scratch (quality.py's ORL case; the Makefile's demo options at
   64 px: --weights none --frozen-epochs 5 --finetune-epochs 2 --steps-per-epoch 50
   --val-fraction 0.5, so 10 identities train and 10 are held out);
2. `siamcli evaluate --model RUN` on those 10 held-out identities writes calibration.json
   (the threshold at the equal error rate, with its false-match / false-non-match rates);
3. `siamcli verify --pairs` on s21–s40 (never trained on, never calibrated on): every
   same-identity pair (20 × 45 = 900) and as many different-identity pairs drawn uniformly
   without replacement (seeded).

Printed: accuracy at the calibrated threshold with a 95 % interval (bootstrap over identities,
the subsets bootstrap calibration uses: pairs of one person are not independent draws), the
false-match and false-non-match rates there against what calibration promised, ROC AUC and EER.

    SIAMCLI_ATT_FACES=/path/to/att_faces python benchmarks/bench_verify.py [--seed 0] [--json out.json] [-- train options]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

from quality import orl_case, train  # noqa: E402  (the ORL split and the training subprocess, said once there)

from siamcli.atomic import write_json  # noqa: E402
from siamcli.evaluation.calibrate import _rate_with_interval  # noqa: E402  (the identity bootstrap calibrate uses)

TRAIN_FLAGS = ["--frozen-epochs", "5", "--finetune-epochs", "2", "--steps-per-epoch", "50", "--val-fraction", "0.5"]
IMAGE_SIZE = 64


def siamcli(*args: str) -> str:
    """stdout of `siamcli ARGS` (a subprocess: the real command); exit on failure."""
    print("$ siamcli", " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "siamcli", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"siamcli {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if line.startswith(("warning:", "scores on", "threshold:")):
            print("  " + line, flush=True)
    return done.stdout


def write_pairs(path: Path, paths: list[str], labels: list[str], seed: int) -> int:
    """Every same-identity pair and as many different-identity ones (uniform, no replacement); returns the count."""
    everything = list(combinations(range(len(paths)), 2))
    same = [(i, j) for i, j in everything if labels[i] == labels[j]]
    different = [(i, j) for i, j in everything if labels[i] != labels[j]]
    chosen = np.random.default_rng(seed).choice(len(different), size=min(len(same), len(different)), replace=False)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "same"])
        writer.writerows([paths[i], paths[j], 1] for i, j in same)
        writer.writerows([paths[i], paths[j], 0] for i, j in (different[k] for k in sorted(chosen)))
    return len(same) + len(chosen)


def accuracy_interval(answers: list[dict], label_of: dict[str, str], seed: int) -> tuple[float, tuple[float, float]]:
    """Accuracy at the threshold and its 95 % interval, resampling the identities behind the pairs."""
    errors = np.array([answer["match"] != answer["same"] for answer in answers])
    names = sorted(set(label_of.values()))
    codes = np.array([[names.index(label_of[answer["a"]]), names.index(label_of[answer["b"]])] for answer in answers])
    error, (low, high) = _rate_with_interval(errors, codes, seed)
    return 1.0 - error, (1.0 - high, 1.0 - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="training seed and the seed of the different-pair sample")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("extra", nargs="*", help="`siamcli train` options replacing the demo's (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamcli-verify-"))
    case = orl_case(work)
    if isinstance(case, str):
        sys.exit(f"bench_verify: {case}")
    case = dataclasses.replace(case, image_size=IMAGE_SIZE)
    run = work / "run"
    started = time.perf_counter()
    summary, train_seconds = train(case, args.seed, run, args.extra or TRAIN_FLAGS)
    siamcli("evaluate", "--model", str(run), "--no-baselines", "--json")
    calibration = json.loads((run / "calibration.json").read_text())
    pairs = write_pairs(work / "pairs.csv", case.test_paths, case.test_labels, args.seed)
    verify_started = time.perf_counter()
    answers = json.loads(siamcli("verify", "--pairs", str(work / "pairs.csv"), "--model", str(run), "--json",
                                 "--scores-json", str(work / "scores.json")))
    verify_seconds = time.perf_counter() - verify_started
    if answers[0]["threshold"] is None:
        sys.exit(f"bench_verify: no calibrated threshold to measure: {answers[0]['reason']}")
    scores = json.loads((work / "scores.json").read_text())
    accuracy, interval = accuracy_interval(answers, dict(zip(case.test_paths, case.test_labels)), args.seed)
    result = {
        "train_identities": summary.get("train_identities"), "epochs": summary.get("epochs"), "train_seconds": round(train_seconds),
        "calibration": {key: calibration[key] for key in ("threshold", "far", "far_ci95", "frr", "frr_ci95", "identities", "reliable")},
        "similarity_threshold": answers[0]["threshold"], "pairs": pairs, "scored": scores["pairs"], "same_pairs": scores["same_pairs"],
        "accuracy": accuracy, "accuracy_ci95": interval, "roc_auc": scores["roc_auc"], "eer": scores["eer"],
        "eer_threshold": scores["eer_threshold"], "false_match_rate": scores["false_match_rate"],
        "false_non_match_rate": scores["false_non_match_rate"], "verify_seconds": round(verify_seconds, 1),
        "total_seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(result, indent=1))
    print(table(result))
    if args.json:
        write_json(args.json, result)


def table(r: dict) -> str:
    c = r["calibration"]
    return "\n".join([
        "| unseen pairs (same / different) | threshold (cosine) | accuracy [95 % CI] | ROC AUC | EER | FMR unseen (calibrated) | FNMR unseen (calibrated) |",
        "|---|---|---|---|---|---|---|",
        f"| {r['scored']} ({r['same_pairs']} / {r['scored'] - r['same_pairs']}) | {r['similarity_threshold']:.4f} | "
        f"{r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, {r['accuracy_ci95'][1]:.3f}] | {r['roc_auc']:.3f} | {r['eer']:.3f} | "
        f"{r['false_match_rate']:.3f} ({c['far']:.3f} [{c['far_ci95'][0]:.3f}, {c['far_ci95'][1]:.3f}]) | "
        f"{r['false_non_match_rate']:.3f} ({c['frr']:.3f} [{c['frr_ci95'][0]:.3f}, {c['frr_ci95'][1]:.3f}]) |",
    ])


if __name__ == "__main__":
    main()
