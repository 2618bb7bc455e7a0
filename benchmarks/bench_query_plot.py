"""Time and peak memory of `siamcli query DIR --plot ...` for 1,000 queries, against the same query
without --plot, measured in one run.

Three processes of the real CLI, one after the other, on the same index and query folder:

  (a) `siamcli query QUERIES --json`                       the baseline
  (b) `siamcli query QUERIES --plot FILE.png --json`       one picture of the first 20 queries
  (c) `siamcli query QUERIES --plot DIR/ --json`           one picture per query, drawn one at a time

Each process's peak is its VmHWM, read from /proc while it runs (bench_index_updates.siamcli).
The bound to check: (b) and (c) peak about as (a) does, whatever the number of queries; (b)
costs a fixed time over (a), (c) a time per query. Before the bound, 720 queries drew one
93 MB picture of 1,243 × 188,083 px in 216 s at an 8.1 GB peak (issue 21).

Images are synthetic (a noisy pattern per identity, 64 px PNGs) in a temporary folder; the
model is the tests' tiny untrained 32 px ResNet50 + 16-d head (bench_index_updates.make_model),
or pass --run RUN to use a trained run.

    python benchmarks/bench_query_plot.py [--queries 1000] [--gallery 200] [--k 5] [--run RUN]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index_updates import make_model, siamcli  # noqa: E402


def write_images(root: Path, count: int, identities: int, seed: int) -> Path:
    """root/id_<i>/img_<n>.png: `count` 64 px images, noisy variants of one pattern per identity."""
    rng = np.random.default_rng(seed)
    patterns = [np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((64, 64), Image.BILINEAR), np.float32)
                for _ in range(identities)]
    for n in range(count):
        folder = root / f"id_{n % identities}"
        folder.mkdir(parents=True, exist_ok=True)
        noisy = np.clip(patterns[n % identities] + rng.normal(0, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{n}.png")
    return root


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--gallery", type=int, default=200, help="gallery images (20 identities)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--run", help="an existing run (or model.keras) instead of the tiny untrained model")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamcli-bench-plot-"))
    run = args.run or str(make_model(work / "run", 16))
    gallery = write_images(work / "gallery", args.gallery, identities=20, seed=0)
    queries = write_images(work / "queries", args.queries, identities=20, seed=1)
    siamcli("index", str(gallery), "--model", run, "--out", str(work / "index"))
    query = ("query", str(queries), "--index", str(work / "index"), "--model", run, "--k", str(args.k))

    answers, plain_s, plain_mib, _ = siamcli(*query)
    assert len(answers) == args.queries, len(answers)
    _, file_s, file_mib, file_err = siamcli(*query, "--plot", str(work / "plot.png"))
    _, dir_s, dir_mib, _ = siamcli(*query, "--plot", f"{work / 'plots'}{os.sep}")

    with Image.open(work / "plot.png") as picture:
        width, height = picture.size
    pictures = sorted((work / "plots").iterdir())
    with Image.open(pictures[0]) as picture:
        row_width, row_height = picture.size
    print(f"{args.queries} queries, k = {args.k}, gallery {args.gallery} images; load average {os.getloadavg()[0]:.1f}")
    print(f"  no --plot            {plain_s:7.1f} s  peak RSS {plain_mib:7.0f} MiB")
    print(f"  --plot FILE.png      {file_s:7.1f} s  peak RSS {file_mib:7.0f} MiB  (×{file_s / plain_s:.2f} time, ×{file_mib / plain_mib:.2f} "
          f"memory): one picture, {width} × {height} px, {(work / 'plot.png').stat().st_size / 2**20:.1f} MiB")
    print(f"  --plot DIR/          {dir_s:7.1f} s  peak RSS {dir_mib:7.0f} MiB  (×{dir_s / plain_s:.2f} time, ×{dir_mib / plain_mib:.2f} "
          f"memory): {len(pictures)} pictures of {row_width} × {row_height} px, {folder_mib(work / 'plots'):.1f} MiB in all, "
          f"{(dir_s - plain_s) / args.queries * 1000:.0f} ms a query")
    print(f"  the FILE.png warning: {next(line for line in file_err.splitlines() if line.startswith('warning: '))}")
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
