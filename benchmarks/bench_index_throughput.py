"""Embedding throughput of the whole `siamcli index` process vs `model.predict` on images in memory.

Measured in one run, same model, same images, same batch and image size:

  (a) `siamcli index GALLERY --force --json` in a subprocess (the real CLI: scan, parallel
      Pillow decode in tf.data, resize, forward, vectors streamed to disk, hashing, FAISS):
      images/s of its embedding loop (from --json), and end to end (process wall time,
      TensorFlow import and model load included);
  (b) `model.predict` on the same images already decoded and resized in memory, cold (first
      call, tracing included) and warm (measured before and after (a), averaged).

Target: (a) steady state (after the first batch, which traces the model) / (b warm) ≥ 0.90.
The other ratios are printed too. On a shared machine, compare runs at a similar load average. The gallery is att_faces (400 photos), repeated with file
symlinks to reach --images. The model is ResNet50 (random weights: offline) + a 256-d head,
the architecture `siamcli train` builds with ImageNet weights; pass --model RUN to use a run.

    python benchmarks/bench_index_throughput.py [--images 2000] [--image-size 64] [--batch-size 32]
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
sys.path.insert(0, str(REPO))


def make_gallery(root: Path, images: int) -> Path:
    """att_faces as identity folders, each photo linked under several names until `images`."""
    photos = sorted(ATT.glob("s*/*.png"))
    if not photos:
        sys.exit(f"att_faces not found at {ATT}; set SIAMCLI_ATT_FACES")
    for n in range(images):
        source = photos[n % len(photos)]
        folder = root / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"r{n // len(photos)}_{source.name}").symlink_to(source)
    return root


def make_model_run(run_dir: Path, image_size: int, embedding_dim: int) -> Path:
    from siamcli.models import embedding as nets
    from siamcli.models.backbone_weights import WeightsChoice
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    backbone = nets.build_backbone(image_size, WeightsChoice("none", None), nets.LAST_LAYER, "avg")
    head = nets.build_head(embedding_dim, int(backbone.output_shape[-1]))
    run_dir.mkdir(parents=True)
    nets.assemble(backbone, head, image_size).save(run_dir / "model.keras")
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="gallery size (att_faces repeated)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="use this run (or model.keras) instead of an untrained ResNet50")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="siamcli-bench-index-"))
    gallery = make_gallery(work / "gallery", args.images)
    if args.model:
        from siamcli.rundir import find_run

        run_dir = find_run(args.model).run_dir
    else:
        run_dir = make_model_run(work / "run", args.image_size, args.embedding_dim)

    from siamcli.data.scan import scan_folder
    from siamcli.models.embed import load_pixels, model_image_size
    from siamcli.models.embedding import load_embedding_model

    # (b) predict on the same images, decoded and resized in memory beforehand: cold, then warm
    # before and after (a), so a load change on the machine during the run shows.
    model = load_embedding_model(run_dir / "model.keras")
    size = model_image_size(model)
    paths = [item.path for item in scan_folder(gallery, labelled=False).items]
    images = load_pixels(paths, size).images.astype(np.float32)

    cpu_rates = []

    def predict_rate() -> float:
        started, cpu = time.perf_counter(), time.process_time()
        model.predict(images, batch_size=args.batch_size, verbose=0)
        cpu_rates.append(len(images) / (time.process_time() - cpu))
        return len(images) / (time.perf_counter() - started)

    cold = predict_rate()
    warm_before = predict_rate()

    # (a) the real CLI, in its own process.
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "siamcli", "index", str(gallery), "--model", str(run_dir), "--out", str(work / "index"),
         "--force", "--json", "--batch-size", str(args.batch_size)],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(completed.stderr)
    warm_after = predict_rate()
    warm = (warm_before + warm_after) / 2

    summary = json.loads(completed.stdout)
    count = summary["count"]
    loop_rate = summary["images_per_second"]
    steady_rate = (count - args.batch_size) / (summary["embed_seconds"] - summary["first_batch_seconds"])
    end_to_end = count / wall
    loop_cpu_rate = count / summary["embed_cpu_seconds"]
    cold_cpu, warm_cpu = cpu_rates[0], (cpu_rates[1] + cpu_rates[2]) / 2

    print(f"images {count}, image size {size}, batch {args.batch_size}, embedding dim {model.output_shape[-1]}, "
          f"cores {os.cpu_count()}, load average before/after {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    print(f"(a) siamcli index, embedding loop, steady  {steady_rate:8.1f} images/s  (after the first batch)")
    print(f"(a) siamcli index, embedding loop, all     {loop_rate:8.1f} images/s  ({summary['embed_seconds']:.1f} s, "
          f"first batch {summary['first_batch_seconds']:.1f} s)")
    print(f"(a) siamcli index, whole process           {end_to_end:8.1f} images/s  ({wall:.1f} s incl. TF import, model load, FAISS, writing)")
    print(f"(b) model.predict in memory, cold          {cold:8.1f} images/s  (first call: tracing included)")
    print(f"(b) model.predict in memory, warm          {warm:8.1f} images/s  (before {warm_before:.1f}, after {warm_after:.1f})")
    print(f"ratio steady loop / predict warm           {steady_rate / warm:8.3f}  (target >= 0.90)")
    print(f"ratio whole loop  / predict cold           {loop_rate / cold:8.3f}  (both include tracing)")
    print(f"ratio whole process / predict warm         {end_to_end / warm:8.3f}")
    print("CPU time (robust to other load on a shared machine): images per CPU-second, all threads")
    print(f"(a) embedding loop (all batches)           {loop_cpu_rate:8.1f}")
    print(f"(b) predict cold / warm                    {cold_cpu:8.1f} / {warm_cpu:.1f}")
    print(f"ratio loop / predict warm (CPU)            {loop_cpu_rate / warm_cpu:8.3f}  (target >= 0.90)")
    print(f"ratio loop / predict cold (CPU)            {loop_cpu_rate / cold_cpu:8.3f}  (both include tracing)")


if __name__ == "__main__":
    main()
