"""Open-set quality on att_faces: train on s1–s20, evaluate on the unseen s21–s40.

Runs the real `siamcli train` (as a subprocess, with the options given after `--`), then
scores the trained model, the raw pixels and the untrained network on s21–s40 with the same
retrieval metrics, and prints them side by side, with the training time.

    python benchmarks/quality_att_faces.py                      # the defaults: --image-size 96 --weights none
    python benchmarks/quality_att_faces.py -- --mining hard --margin 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ATT = Path(os.environ.get("SIAMCLI_ATT_FACES", REPO.parent / "shared" / "datasets" / "att_faces"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--keep", type=Path, help="keep the run directory here")
    parser.add_argument("extra", nargs="*", help="further `siamcli train` options (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamcli-quality-"))
    train_dir = work / "s1_s20"
    train_dir.mkdir()
    for i in range(1, 21):
        (train_dir / f"s{i}").symlink_to(ATT / f"s{i}")
    run = args.keep or work / "run"
    command = [sys.executable, "-m", "siamcli", "train", str(train_dir), "--image-size", str(args.image_size),
               "--weights", "none", "--out", str(run), "--force", "--json", *args.extra]
    print("$", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)

    from siamcli.models.embed import load_pixels
    from siamcli.data.scan import scan_folder
    from siamcli.evaluation.metrics import retrieval_metrics
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model
    from siamcli.training.config import TrainConfig

    items = [item for item in scan_folder(ATT).items if int(item.label[1:]) > 20]
    paths, labels = [item.path for item in items], [item.label for item in items]

    def score(vectors):
        vectors = np.asarray(vectors, np.float32)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        result = retrieval_metrics(vectors, labels, ks=(1,))
        return result.map_at_r, result.precision_at_1

    trained = score(embed(load_embedding_model(run / "model.keras"), paths).vectors)
    pixels = load_pixels(paths, args.image_size).images.reshape(len(paths), -1).astype(np.float32)
    raw = score(pixels)

    from siamcli.models import embedding as nets
    from siamcli.models.backbone_weights import WeightsChoice
    import keras

    config = TrainConfig.from_json(json.loads((run / "config.json").read_text()))
    keras.utils.set_random_seed(config.seed)
    backbone = nets.build_backbone(config.image_size, WeightsChoice("none", None), config.feature_layer, config.pooling)
    head = nets.build_head(config.embedding_dim, int(backbone.output_shape[-1]), config.dropout)
    untrained = score(embed(nets.assemble(backbone, head, config.image_size), paths).vectors)

    print(f"\ntraining: {seconds:.0f} s, {summary['epochs']} epochs, best epoch {summary['best_epoch']}, "
          f"images/s {json.dumps({k: round(v, 1) for k, v in summary['images_per_second'].items()})}")
    print(f"{'s21–s40 (unseen)':<28}{'map_at_r':>10}{'precision_at_1':>16}")
    for name, (map_r, p1) in (("trained (siamcli train)", trained), ("untrained, same network", untrained), ("raw pixels", raw)):
        print(f"{name:<28}{map_r:>10.3f}{p1:>16.3f}")
    print(f"ratio trained / raw pixels (map_at_r): {trained[0] / raw[0]:.2f}")


if __name__ == "__main__":
    main()
