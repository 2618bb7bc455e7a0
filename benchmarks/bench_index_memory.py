"""Peak memory of `siamcli index` on N images and on 10× more, measured in one run.

Each build is the real CLI in its own process (`siamcli index GALLERY --force --json`); its
peak resident memory comes from the kernel (`wait4` → ru_maxrss), so nothing is sampled or
missed. Embeddings stream to disk batch by batch and the index is built from that file in
chunks, so the peak should grow with N by about the index itself (the FAISS index, plus the
per-image rows of items/hashes kept in memory), not by the images: the target is
growth ≤ the index's size.

Gallery: att_faces repeated with file symlinks; model: ResNet50 (random weights) + 256-d head,
as in bench_index_throughput.py, at 32 px by default: memory is about N, not the model, and a
fast model lets N be large enough for the index (1 KiB per image at d = 256) to stand out from
the ±20–30 MiB by which TensorFlow's peak varies between identical runs. Each size is built
--repeats times; the smallest peak of each is compared (the spread is printed).

    python benchmarks/bench_index_memory.py [--images 2000] [--factor 10] [--image-size 32] [--repeats 2]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_index_throughput import make_gallery, make_model_run  # noqa: E402


def build_and_measure(gallery: Path, run_dir: Path, out: Path, batch_size: int) -> dict:
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "siamcli", "index", str(gallery), "--model", str(run_dir), "--out", str(out),
             "--force", "--json", "--batch-size", str(batch_size)],
            stdout=stdout, stderr=stderr, text=True,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, from the kernel
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            sys.exit(stderr.read())
        summary = json.loads(stdout.read())
    sizes = {name: (out / name).stat().st_size for name in ("index.faiss", "embeddings.npy", "items.sqlite", "items.csv")}
    return {"count": summary["count"], "peak_mib": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - started,
            "sizes_mib": {k: v / 2**20 for k, v in sizes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="the smaller gallery (att_faces, repeated)")
    parser.add_argument("--factor", type=int, default=10, help="the larger gallery is this many times bigger")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="builds per size; the smallest peak counts")
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="siamcli-bench-memory-"))
    run_dir = make_model_run(work / "run", args.image_size, args.embedding_dim)
    rows = []
    for n in (args.images, args.images * args.factor):
        gallery = make_gallery(work / f"gallery_{n}", n)
        runs = [build_and_measure(gallery, run_dir, work / f"index_{n}", args.batch_size) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["peak_mib"])
        best["spread"] = [round(r["peak_mib"], 1) for r in runs]
        rows.append(best)
    small, large = rows
    for row in rows:
        sizes = ", ".join(f"{k} {v:.2f}" for k, v in row["sizes_mib"].items())
        print(f"{row['count']:>7} images: peak RSS {row['peak_mib']:8.1f} MiB  (runs: {row['spread']}; {row['seconds']:.0f} s; "
              f"files MiB: {sizes})")
    growth = large["peak_mib"] - small["peak_mib"]
    index_total = large["sizes_mib"]["index.faiss"]
    with_rows = index_total + large["sizes_mib"]["items.sqlite"]
    print(f"peak growth for {args.factor}x the images: {growth:+.1f} MiB; index.faiss at {large['count']} images: "
          f"{index_total:.2f} MiB (with items.sqlite: {with_rows:.2f} MiB)")
    print(f"growth / index size: {growth / index_total:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
