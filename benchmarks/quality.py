"""Open-set quality across data sets and seeds: does training beat not training?

For every case and seed: `siamcli train` with default options (a subprocess, from scratch:
`--weights none`, the case's image size, `--seed`), then the trained model, the untrained
backbone (the run's own starting network) and raw pixels are scored on the case's *unseen*
identities with the same retrieval metrics (`retrieval_metrics`, leave-one-out), with the time
the training took.

Cases:
    orl     ORL / AT&T faces (att_faces): train s1–s20, evaluate s21–s40, 96 px. Read from the
            folder named by the environment variable SIAMCLI_ATT_FACES (skipped, saying so, when
            it is unset or not there).
    digits  scikit-learn's handwritten digits (ships with scikit-learn): classes 0–4 → 5–9,
            60 images per class (the first 60 of each), 8×8 upsampled to 64 px.

    python benchmarks/quality.py                              # every case, seeds 0 1 2
    python benchmarks/quality.py --cases digits --seeds 0 -- --frozen-epochs 3
    python benchmarks/quality.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Case:
    name: str
    image_size: int
    train_dir: Path
    test_paths: list[str]
    test_labels: list[str]


def orl_case(work: Path) -> Case | str:
    root = os.environ.get("SIAMCLI_ATT_FACES")
    if not root:
        return "SIAMCLI_ATT_FACES is not set (the att_faces folder, holding s1 … s40)"
    att = Path(root)
    if not all((att / f"s{i}").is_dir() for i in range(1, 41)):
        return f"SIAMCLI_ATT_FACES={att} does not hold s1 … s40"
    train_dir = work / "orl_s1_s20"
    train_dir.mkdir()
    for i in range(1, 21):
        (train_dir / f"s{i}").symlink_to(att / f"s{i}")
    from siamcli.data.scan import scan_folder

    items = [item for item in scan_folder(att).items if int(item.label[1:]) > 20]
    return Case("orl", 96, train_dir, [item.path for item in items], [item.label for item in items])


def digits_case(work: Path, per_class: int = 60) -> Case | str:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = work / "digits"
    paths: dict[int, list[str]] = {}
    for label in range(10):
        folder = root / ("train" if label < 5 else "test") / f"digit_{label}"
        folder.mkdir(parents=True)
        for j, position in enumerate(np.flatnonzero(digits.target == label)[:per_class]):
            pixels = np.round(digits.images[position] * (255.0 / 16.0)).astype(np.uint8)  # 0–16 → 0–255, 8×8
            path = folder / f"{j:03d}.png"
            Image.fromarray(pixels, "L").save(path)
            paths.setdefault(label, []).append(str(path))
    test = [(path, f"digit_{label}") for label in range(5, 10) for path in paths[label]]
    return Case("digits", 64, root / "train", [p for p, _ in test], [label for _, label in test])


CASES = {"orl": orl_case, "digits": digits_case}


def train(case: Case, seed: int, run: Path, extra: list[str]) -> tuple[dict, float]:
    command = [sys.executable, "-m", "siamcli", "train", str(case.train_dir), "--image-size", str(case.image_size),
               "--weights", "none", "--seed", str(seed), "--out", str(run), "--force", "--json", *extra]
    print("$", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), seconds


def scores(case: Case, run: Path) -> dict:
    """{trained, untrained, raw} → (map_at_r, precision_at_1) on the case's unseen identities."""
    from siamcli.evaluation.baselines import RAW_PIXELS, UNTRAINED_BACKBONE, baseline_features
    from siamcli.evaluation.metrics import retrieval_metrics
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    def score(vectors):
        result = retrieval_metrics(np.asarray(vectors, np.float32), case.test_labels, ks=(1,))
        return result.map_at_r, result.precision_at_1

    config = json.loads((run / "config.json").read_text())
    trained = score(embed(load_embedding_model(run / "model.keras"), case.test_paths).vectors)
    baselines = baseline_features(case.test_paths, case.image_size, config)
    return {
        "trained": trained,
        "untrained": score(baselines.features[UNTRAINED_BACKBONE]),
        "raw": score(baselines.features[RAW_PIXELS]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["orl", "digits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("extra", nargs="*", help="further `siamcli train` options (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamcli-quality-"))
    rows = []
    for name in args.cases:
        case = CASES[name](work)
        if isinstance(case, str):
            print(f"{name}: skipped: {case}", flush=True)
            continue
        for seed in args.seeds:
            run = work / f"run_{name}_{seed}"
            summary, seconds = train(case, seed, run, args.extra)
            found = scores(case, run)
            row = {"case": name, "seed": seed, "seconds": seconds, "epochs": summary["epochs"],
                   "kept_epoch": summary["best_epoch"], "selection": summary.get("selection"),
                   **{f"{key}_{metric}": value[i] for key, value in found.items()
                      for i, metric in enumerate(("map_at_r", "precision_at_1"))}}
            rows.append(row)
            print(f"{name} seed {seed}: trained {row['trained_map_at_r']:.3f}  untrained {row['untrained_map_at_r']:.3f}  "
                  f"raw {row['raw_map_at_r']:.3f}  ({seconds:.0f} s; {summary.get('selection')})", flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def table(rows: list[dict]) -> str:
    """A Markdown table: per case and seed, MAP@R / P@1 of trained, untrained backbone, raw pixels, and time."""
    lines = ["| case | seed | trained MAP@R | P@1 | untrained MAP@R | P@1 | raw pixels MAP@R | P@1 | kept epoch | train time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['seed']} | {row['trained_map_at_r']:.3f} | {row['trained_precision_at_1']:.3f} | "
            f"{row['untrained_map_at_r']:.3f} | {row['untrained_precision_at_1']:.3f} | {row['raw_map_at_r']:.3f} | "
            f"{row['raw_precision_at_1']:.3f} | {row['kept_epoch']} | {row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
