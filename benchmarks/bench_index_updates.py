"""What an index update costs next to a full build, and what a query costs at scale.

    python benchmarks/bench_index_updates.py --count 1e6 --workdir W            # append 1,000 to 10^6
    python benchmarks/bench_index_updates.py --from-index F --factory S --params JSON --workdir W   # a query at 10^7

Builds, once per workdir (kept for reruns): an untrained 32 px model with --dim outputs
(`weights=None`: nothing is downloaded), a gallery of --count small files (the same PNG bytes:
their content is never read by an append, only their size and time), and an index over
synthetic clustered unit vectors written through siamcli's own segment writer, with each
file's real size and mtime. Then, each in a fresh process as a user runs them:

  append   `siamcli index W/gallery --append` after --append new, distinct images were added:
           wall time, bytes written (the command's own count, and the growth of the folder),
           and how long the scan/compare took before embedding started;
  rewrite  `siamcli index --compact` of the same index: the whole index rewritten from the
           stored vectors, no embedding; a full build also embeds every image, estimated at
           the append's measured images/s;
  query    `siamcli query` for one image, k = 10: wall time and peak RSS; and in this
           process, naming 10 results from items.sqlite vs reading every row of it (what
           reading items.csv whole used to cost).

With --from-index FILE (an index.faiss that benchmarks/bench_large_gallery.py built over
synthetic vectors, e.g. 10^7 of them, with its factory string and search parameters), the store is assembled around that file instead —
items.sqlite with synthetic paths (no gallery on disk), the manifest — and only the query is
measured: what `siamcli query` costs at that size, its metadata lookup apart.

Prints one table and the ratios; absolute times drift with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_model(run: Path, dim: int) -> Path:
    if (run / "model.keras").is_file():
        return run
    from siamcli.atomic import write_json
    from siamcli.models import embedding as nets
    from siamcli.models.backbone_weights import WeightsChoice
    from siamcli.tf_runtime import import_tensorflow
    from siamcli.training.config import TrainConfig

    import_tensorflow()
    import keras

    config = TrainConfig(data_dir=str(run), image_size=32, embedding_dim=dim, weights="none").resolve()
    keras.utils.set_random_seed(0)
    backbone = nets.build_backbone(32, WeightsChoice("none", None), config.feature_layer, config.pooling)
    model = nets.assemble(backbone, nets.build_head(dim, int(backbone.output_shape[-1]), config.dropout), 32)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    write_json(run / "config.json", config.to_json())
    return run


def make_gallery(gallery: Path, count: int) -> list[str]:
    """count files g0000/img_0000000.png … (1,000 a folder), all the same small PNG."""
    from PIL import Image

    marker = gallery / f".complete-{count}"
    paths = [str(gallery / f"g{i // 1000:05d}" / f"img_{i:08d}.png") for i in range(count)]
    if marker.exists():
        return paths
    shutil.rmtree(gallery, ignore_errors=True)
    sample = gallery / "sample.png"
    gallery.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(sample)
    data = sample.read_bytes()
    sample.unlink()
    for i, path in enumerate(paths):
        if i % 1000 == 0:
            os.makedirs(os.path.dirname(path))
        with open(path, "wb") as handle:
            handle.write(data)
    marker.touch()
    return paths


def clustered_vectors(path: Path, count: int, dim: int, seed: int = 0) -> None:
    """Unit vectors around count/50 centres (identities with ~50 photos each), streamed to disk."""
    from siamcli.index.vectors import VectorWriter

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, count // 50), dim)).astype(np.float32)
    with VectorWriter(path, dim, capacity=count) as writer:
        for start in range(0, count, 100_000):
            n = min(100_000, count - start)
            x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
            writer.write(x / np.linalg.norm(x, axis=1, keepdims=True))


def make_index(run: Path, paths: list[str], dim: int, index_type: str) -> float:
    """The index over the gallery, from synthetic vectors, as `siamcli index` lays it out; seconds."""
    from siamcli.atomic import atomic_directory
    from siamcli.hashing import file_sha256
    from siamcli.index import faiss_index
    from siamcli.index import manifest as mf
    from siamcli.index.faiss_io import faiss_module
    from siamcli.index.items import IndexItem
    from siamcli.index.segment import write_segment

    started = time.perf_counter()
    digest = file_sha256(paths[0])

    def items():
        for i, path in enumerate(paths):
            info = os.stat(path)
            yield IndexItem(id=i, path=path, label=os.path.basename(os.path.dirname(path)), sha256=digest,
                            size=info.st_size, mtime_ns=info.st_mtime_ns)

    with atomic_directory(run / "index") as tmp:
        clustered_vectors(tmp / mf.EMBEDDINGS_FILE, len(paths), dim)
        record = write_segment(tmp, items(), faiss_index.plan_index(index_type, len(paths), dim), len(paths), seed=0,
                               galleries=[str(Path(paths[0]).parents[1])])
        mf.write_manifest(tmp, mf.IndexManifest.single_segment(
            record, fingerprint=file_sha256(run / "model.keras"), model_path=(run / "model.keras").resolve(), dim=dim,
            image_size=32, count=len(paths), next_id=len(paths), gallery=str(Path(paths[0]).parents[1]), galleries=None,
            created=mf.now(), faiss_version=faiss_module().__version__))
    return time.perf_counter() - started


def wrap_index(run: Path, faiss_file: Path, dim: int, factory: str, params: dict) -> int:
    """An index folder around an existing index.faiss (rows = its ntotal), synthetic items; rows."""
    from siamcli.atomic import atomic_directory
    from siamcli.hashing import file_sha256
    from siamcli.index import faiss_index
    from siamcli.index import manifest as mf
    from siamcli.index.faiss_io import faiss_module
    index = faiss_index.read_index(faiss_file, mmap=True)
    rows = int(index.ntotal)
    del index
    index_type = "ivfpq" if not faiss_index.keeps_vectors(factory) else "ivf"
    items = synthetic_items(run.parent, rows)
    with atomic_directory(run / "index") as tmp:
        os.link(faiss_file, tmp / mf.INDEX_FILE)  # the same bytes, not a copy of 3 GB
        os.link(items, tmp / mf.ITEMS_FILE)
        fields = {"name": "", "number": 0, "rows": rows, "factory": factory, "index_type": index_type, "chosen_by": "user", "search_params": params,
                  "recall_at_10": 0.0, "recall_sample": 0, "recall_count": rows,
                  "files": {name: mf.file_record(tmp / name) for name in (mf.INDEX_FILE, mf.ITEMS_FILE)}}
        record = mf.SegmentRecord.from_json(fields, Path(mf.MANIFEST))
        mf.write_manifest(tmp, mf.IndexManifest.single_segment(
            record, fingerprint=file_sha256(run / "model.keras"), model_path=(run / "model.keras").resolve(), dim=dim, image_size=32,
            count=rows, next_id=rows, gallery="/data/gallery", galleries=None, created=mf.now(),
            faiss_version=faiss_module().__version__))
    print(f"wrapped {faiss_file} ({factory}, {rows:,} rows): {folder_bytes(run / 'index') / rows:.0f} B a vector with items.sqlite", flush=True)
    return rows


def synthetic_items(work: Path, rows: int) -> Path:
    """W/items-N.sqlite: N rows with paths like /data/gallery/person_0000123/photo_00006150.jpg (made once)."""
    from siamcli.index.items import IndexItem, write_items

    path = work / f"items-{rows}.sqlite"
    if not path.exists():
        started = time.perf_counter()
        write_items(path.with_suffix(".tmp"), (IndexItem(id=i, path=f"/data/gallery/person_{i // 50:07d}/photo_{i:08d}.jpg",
                                                         label=f"person_{i // 50:07d}", sha256=f"{i:064x}", size=48_000 + i % 997,
                                                         mtime_ns=1_700_000_000_000_000_000 + i) for i in range(rows)),
                    ["/data/gallery"])
        os.replace(path.with_suffix(".tmp"), path)
        print(f"items.sqlite with {rows:,} rows: {time.perf_counter() - started:.0f} s, {path.stat().st_size / rows:.0f} B a row", flush=True)
    return path


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def siamcli(*args: str) -> tuple[dict | list, float, float, str]:
    """(JSON output, wall seconds, peak RSS MiB of that process, stderr) of one siamcli command.

    The peak is the child's VmHWM, read from /proc while it runs (every 20 ms; the last reading
    before it exits counts). Not its rusage: Linux carries the RSS of the process that forked
    it (this one, holding a million paths) into a child's ru_maxrss across exec.
    """
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "siamcli", *args, "--json"], stdout=out, stderr=err, text=True)
        peak = 0
        while child.poll() is None:
            peak = max(peak, _hwm_kib(child.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode:
        sys.exit(f"siamcli {' '.join(args)} failed: {stderr[-2000:]}")
    return json.loads(stdout), wall, peak / 1024, stderr


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def add_new_images(gallery: Path, count: int) -> Path:
    from PIL import Image

    folder = gallery / "new"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"new_{i:05d}.png")
    return folder


def lookup_times(index_dir: Path, count: int) -> tuple[float, float]:
    """(seconds to name 10 rows from items.sqlite, seconds to read all of it)."""
    from siamcli.index.items import read_items, read_rows

    galleries = json.loads((index_dir / "manifest.json").read_text())["galleries"]
    rows = np.random.default_rng(2).choice(count, 10, replace=False).tolist()
    started = time.perf_counter()
    read_rows(index_dir / "items.sqlite", rows, galleries)
    some = time.perf_counter() - started
    started = time.perf_counter()
    read_items(index_dir / "items.sqlite", galleries)
    return some, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=float, default=1e5)
    parser.add_argument("--append", type=int, default=1000)
    parser.add_argument("--no-append", action="store_true", help="only build (if needed) and query")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--index-type", default="flat", help="the base segment's type (flat builds fastest; the append cost does not depend on it)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--from-index", type=Path, help="an index.faiss to wrap (only the query is measured)")
    parser.add_argument("--factory", default="", help="with --from-index: its factory string")
    parser.add_argument("--params", default="{}", help="with --from-index: its search parameters (JSON)")
    parser.add_argument("--prepare-items", action="store_true", help="only write W/items-COUNT.sqlite (for a later --from-index)")
    args = parser.parse_args()
    count, work = int(args.count), args.workdir
    run = make_model(work / "run", args.dim)
    if args.prepare_items:
        return synthetic_items(work, count) and None
    if args.from_index:
        count = wrap_index(run, args.from_index, args.dim, args.factory, json.loads(args.params))
        return report_query(run, count, str(REPO / "sample_data" / "queries" / "s1_10.png"), rows=[], label="wrapped")
    started = time.perf_counter()
    paths = make_gallery(work / "gallery", count)
    print(f"gallery of {count:,} files: {time.perf_counter() - started:.0f} s", flush=True)
    built = make_index(run, paths, args.dim, args.index_type)
    index_dir = run / "index"
    base_bytes = folder_bytes(index_dir)
    print(f"index over {count:,} vectors ({args.index_type}) from vectors: {built:.0f} s, {base_bytes / 2**20:,.0f} MiB", flush=True)
    rows = []
    if not args.no_append:
        new = add_new_images(work / "gallery", args.append)
        summary, wall, rss, _ = siamcli("index", str(work / "gallery"), "--model", str(run), "--append")
        grown = folder_bytes(index_dir) - base_bytes
        rows.append(("append", wall, summary["bytes_written"], grown, rss, summary))
        compact, cwall, crss, _ = siamcli("index", "--compact", "--model", str(run))
        rows.append(("rewrite (--compact)", cwall, compact["bytes_written"], None, crss, compact))
        query_image = str(next(new.iterdir()))
    else:
        query_image = paths[0]
    report_query(run, count, query_image, rows, label=f"base type {args.index_type}")


def report_query(run: Path, count: int, query_image: str, rows: list, label: str) -> None:
    index_dir = run / "index"
    result, qwall, qrss, _ = siamcli("query", query_image, "--model", str(run), "--k", "10")
    some, whole = lookup_times(index_dir, count)
    print(f"\n## N = {count:,}, {label}; {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
    print(f"{'command':<22}{'wall s':>9}{'written MiB':>13}{'folder +MiB':>13}{'peak RSS MiB':>14}  notes")
    for name, wall, written, grown, rss, summary in rows:
        note = (f"added {summary['added']}, {summary['images_per_second']} img/s, embed {summary['embed_seconds']} s, "
                f"segments {summary['segments']}" if name == "append" else f"count {summary['count']}")
        print(f"{name:<22}{wall:>9.1f}{written / 2**20:>13.2f}{'' if grown is None else f'{grown / 2**20:.2f}':>13}{rss:>14,.0f}  {note}")
    print(f"{'query (k=10)':<22}{qwall:>9.1f}{'':>13}{'':>13}{qrss:>14,.0f}  {len(result[0]['results'])} results")
    print(f"metadata: 10 rows from items.sqlite {some * 1000:.2f} ms; every row {whole:.2f} s")
    if rows:
        append, rewrite = rows[0], rows[1]
        rate = append[5]["images_per_second"] or 1
        full = rewrite[1] + count / rate
        print(f"append / rewrite: time {append[1] / rewrite[1]:.4f}x, bytes written {append[2] / rewrite[2]:.5f}x")
        print(f"append / full build (rewrite + embedding {count:,} images at {rate} img/s ≈ {full:,.0f} s): time {append[1] / full:.5f}x")
    print(f"query: {qwall:.2f} s wall in all (Python, TensorFlow and the model load most of it), of which naming the 10 results "
          f"{some * 1000:.2f} ms; reading every row, as reading items.csv whole did, {whole:.1f} s")


if __name__ == "__main__":
    main()
