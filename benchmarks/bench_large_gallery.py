"""Galleries of millions: build time, index size, latency, recall@10 and query-process memory.

For each gallery size and index type: the index is built the way `siamcli index` builds it
(`faiss_index.build_and_tune`: the project's factory, training sample, held-out tuning to
recall@10 ≥ 0.96), in its own process (its peak RSS from the kernel, `wait4`), and written
to disk. It is then queried in fresh processes, loaded as `siamcli query` loads it:

    read   faiss.read_index: the whole index in the process's memory
    mmap   faiss.read_index(IO_FLAG_MMAP_IFC) (siamcli's query path for IVF types): the
           lists and the flat storage stay in the file; pages are read as queries touch them
    cold   mmap after dropping the file from the page cache (posix_fadvise DONTNEED): what the
           first queries of a process cost when the index is not in the page cache

Per run: 1,000 queries as one batch, then 200 one at a time (mean, p50 and p99 latency);
recall@10 of the batch against exact ground truth over the whole gallery; VmRSS after loading
and after searching (with RssFile, the part that is mapped file pages the kernel can drop
under pressure). Bytes a vector on disk, in two columns: `index` = index.faiss / N, `vecs` =
the float32 vectors file the store keeps beside it for rebuilds (4·d, or 0 where the index
holds them itself: `faiss_index.keeps_vectors`); the store's per-row metadata (paths, labels,
hashes) is not counted. For those types the mapped run also times `reconstruct_rows` (what a
rebuild reads instead of the vectors file) on the last 65,536 rows.

Data: embedding-like vectors, not isotropic Gaussian noise. Each vector is one of N/10
identities' centres in a 32-d latent space, plus noise, mapped into `dim` dimensions and
normalised (bench_search.EmbeddingLike). Real embeddings have this structure (a few images
per identity, a low intrinsic dimension); isotropic Gaussian vectors in 256-d have none —
every point is nearly equidistant from every other — and no ANN index can beat brute force on
them, which would measure nothing useful. Queries are 1,000 fresh vectors of existing
identities (new photos of known people), never in the index.

The gallery file is streamed to <workdir>/vectors_N.npy in 65,536-row chunks (10^7 × 256
float32 = 10 GB is never held in memory, let alone twice); it and the exact ground truth are
kept in --workdir, so a rerun skips them.

    nice -n 10 python benchmarks/bench_large_gallery.py --workdir /data/bench           # 10^6: flat,hnsw,ivf,sq8,ivfpq
    nice -n 10 python benchmarks/bench_large_gallery.py --sizes 1e7 --types ivfpq --train-per-list 39 --workdir /data/bench
    python benchmarks/bench_large_gallery.py --compare-opq 1e5                          # OPQ vs PQ at equal bytes
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_search import EmbeddingLike  # noqa: E402

from siamcli.index import faiss_index  # noqa: E402
from siamcli.index import vectors as vector_file  # noqa: E402
from siamcli.index.vectors import VectorWriter  # noqa: E402

CHUNK = 65_536
RECONSTRUCT_ROWS = 65_536  # mmap runs of types that keep their own vectors: decode this many rows, timed
SINGLE_QUERIES = 200
K = 10


def status_kib(*keys: str) -> dict:
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            name = line.split(":")[0]
            if name in keys:
                found[name] = int(line.split()[1])
    return found


def vectors_file(workdir: Path, count: int, dim: int) -> Path:
    path = workdir / f"vectors_{count}_{dim}.npy"
    if path.exists() and vector_file.read_shape(path)[0] == (count, dim):
        return path
    data = EmbeddingLike(count, dim)
    rng = np.random.default_rng(1)
    partial = path.with_suffix(".partial")
    with VectorWriter(partial, dim, capacity=count) as writer:
        for start in range(0, count, CHUNK):
            writer.write(data.sample(min(CHUNK, count - start), rng))
    partial.rename(path)
    return path


def queries_and_truth(workdir: Path, count: int, dim: int, n_queries: int, path: Path) -> tuple[Path, Path]:
    queries_path = workdir / f"queries_{count}_{dim}_{n_queries}.npy"
    truth_path = workdir / f"truth_{count}_{dim}_{n_queries}.npy"
    if not truth_path.exists():
        queries = EmbeddingLike(count, dim).sample(n_queries, np.random.default_rng(2))  # same identities, fresh noise
        np.save(queries_path, queries)
        _, rows = faiss_index.exact_neighbours(path, queries, K)
        np.save(truth_path, rows)
    return queries_path, truth_path


# ---------------------------------------------------------------- child processes


def child_build(args) -> dict:
    if args.index_type == "sq8":  # what `auto` builds past the HNSW budget (ivf picks Flat codes while they fit 8 GiB)
        plan = faiss_index.IndexPlan("ivf", f"IVF{faiss_index.nlist_for(args.count)},SQ8", "user")
    else:
        plan = faiss_index.plan_index(args.index_type, args.count, args.dim)
    started = time.perf_counter()
    index, tuning = faiss_index.build_and_tune(Path(args.vectors), plan,
                                               on_stage=lambda text: print(f"  [{time.perf_counter() - started:7.1f}s] {text}", file=sys.stderr, flush=True))
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    faiss_index.write_index(index, args.index)
    return {"factory": plan.factory, "params": tuning.params, "manifest_recall": tuning.recall_at_10,
            "reached": tuning.reached, "build_s": build_s, "write_s": time.perf_counter() - started,
            "keeps_vectors": faiss_index.keeps_vectors(plan)}


def child_query(args) -> dict:
    queries = np.load(args.queries_file)
    truth = np.load(args.truth)
    if args.mode == "cold":  # drop the index's pages from the page cache (clean pages: no root needed)
        fd = os.open(args.index, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    faiss_index.faiss_module()  # the library itself is not the index
    before = status_kib("VmRSS")["VmRSS"]
    started = time.perf_counter()
    index = faiss_index.read_index(args.index, mmap=args.mode != "read")
    load_s = time.perf_counter() - started
    faiss_index.set_search_params(index, json.loads(args.params))
    loaded = status_kib("VmRSS", "RssFile")
    out = {"load_s": load_s, "rss_load_mib": (loaded["VmRSS"] - before) / 1024}
    # one at a time first (a cold cache is only cold once), then the batch
    times = []
    for i in range(SINGLE_QUERIES):
        started = time.perf_counter()
        index.search(queries[i:i + 1], K)
        times.append(time.perf_counter() - started)
    out["single_ms"] = float(np.mean(times)) * 1000
    out["single_p50_ms"], out["single_p99_ms"] = (float(v) * 1000 for v in np.percentile(times, [50, 99]))
    started = time.perf_counter()
    _, found = index.search(queries, K)
    out["batch_ms"] = (time.perf_counter() - started) / len(queries) * 1000
    out["recall"] = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth)]))
    after = status_kib("VmRSS", "RssFile")
    out["rss_after_mib"] = (after["VmRSS"] - before) / 1024
    out["rss_file_mib"] = after.get("RssFile", 0) / 1024
    if args.mode == "mmap" and not faiss_index.keeps_vectors(args.factory):  # what a rebuild reads instead of embeddings.npy
        rows = min(RECONSTRUCT_ROWS, index.ntotal)
        started = time.perf_counter()
        faiss_index.reconstruct_rows(index, index.ntotal - rows, rows)
        out["reconstruct_rows_per_s"] = rows / (time.perf_counter() - started)
    return out


def run_child(argv: list[str]) -> tuple[dict, float]:
    """(the child's JSON answer, its peak RSS in MiB)."""
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen([sys.executable, __file__, *argv], stdout=stdout)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"child {' '.join(argv)} failed")
        stdout.seek(0)
        return json.loads(stdout.read().strip().splitlines()[-1]), usage.ru_maxrss / 1024


# ---------------------------------------------------------------- the table


def run_type(workdir: Path, count: int, dim: int, index_type: str, vectors: Path, queries: Path, truth: Path,
             train_per_list: int | None) -> dict:
    index_path = workdir / f"{index_type}_{count}_{dim}.faiss"
    argv = ["--child", "build", "--index-type", index_type, "--count", str(count), "--dim", str(dim),
            "--vectors", str(vectors), "--index", str(index_path)]
    if train_per_list:
        argv += ["--train-per-list", str(train_per_list)]
    built, build_peak = run_child(argv)
    row = {"type": index_type, "N": count, **built, "build_peak_mib": build_peak, "bytes": index_path.stat().st_size,
           # the float32 copy the store keeps beside an index that does not hold its vectors by row (embeddings.npy)
           "vectors_bytes": 4 * dim * count if built["keeps_vectors"] else 0}
    modes = ("read", "mmap", "cold") if index_type in ("ivf", "sq8", "ivfpq") else ("read",)
    for mode in modes:
        answer, peak = run_child(["--child", "query", "--mode", mode, "--index", str(index_path), "--queries-file", str(queries),
                                  "--truth", str(truth), "--params", json.dumps(built["params"]), "--factory", built["factory"]])
        row[mode] = {**answer, "peak_mib": peak}
    index_path.unlink()
    return row


def print_header() -> None:
    """B/vec: index = index.faiss / N; vecs = the float32 file the store keeps beside it (0 where the
    index holds its own vectors: faiss_index.keeps_vectors). The store's per-row metadata is not counted."""
    print(f"{'N':>10} {'type':>6} {'factory':>34} {'search params':>44} {'build':>6} {'peak':>7} {'file':>7} {'index':>5} {'vecs':>5} "
          f"{'load':>5} {'load':>6} {'RSS':>6} {'batch':>6} {'single':>7} {'p50':>6} {'p99':>6} {'recall':>6} {'RSS':>6} {'file':>6} {'anon':>6}")
    print(f"{'':>10} {'':>6} {'':>34} {'':>44} {'s':>6} {'MiB':>7} {'MiB':>7} {'B/vec':>5} {'B/vec':>5} "
          f"{'as':>5} {'s':>6} {'load':>6} {'ms/q':>6} {'ms/q':>7} {'ms':>6} {'ms':>6} {'@10':>6} {'after':>6} {'pages':>6} {'':>6}")


def print_row(row: dict) -> None:
    params = ",".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
    first = True
    for mode in ("read", "mmap", "cold"):
        if mode not in row:
            continue
        q = row[mode]
        vectors = row.get("vectors_bytes", 4 * 256 * row["N"] * faiss_index.keeps_vectors(row["factory"]))  # earlier runs: d = 256
        lead = (f"{row['N']:>10,} {row['type']:>6} {row['factory']:>34} {params:>44} {row['build_s']:>6.0f} "
                f"{row['build_peak_mib']:>7,.0f} {row['bytes'] / 2**20:>7,.0f} {row['bytes'] / row['N']:>5.0f} "
                f"{vectors / row['N']:>5.0f}") if first else " " * 129
        print(f"{lead} {mode:>5} {q['load_s']:>6.2f} {q['rss_load_mib']:>6,.0f} {q['batch_ms']:>6.2f} {q['single_ms']:>7.2f} "
              f"{q.get('single_p50_ms', float('nan')):>6.2f} {q.get('single_p99_ms', float('nan')):>6.2f} "
              f"{q['recall']:>6.3f} {q['rss_after_mib']:>6,.0f} {q['rss_file_mib']:>6,.0f} "
              f"{max(0.0, q['rss_after_mib'] - q['rss_file_mib']):>6,.0f}", flush=True)
        first = False


def print_ratios(rows: list[dict]) -> None:
    for row in rows:
        if "mmap" in row:
            read, mapped, cold = row["read"], row["mmap"], row["cold"]
            print(f"{row['N']:,} {row['type']}: RSS after load mmap {mapped['rss_load_mib']:,.0f} vs read {read['rss_load_mib']:,.0f} MiB; "
                  f"after the queries, memory the kernel cannot drop (anon) mmap "
                  f"{max(0.0, mapped['rss_after_mib'] - mapped['rss_file_mib']):,.0f} vs read "
                  f"{max(0.0, read['rss_after_mib'] - read['rss_file_mib']):,.0f} MiB; "
                  f"single-query latency mmap/read "
                  f"{mapped['single_ms'] / read['single_ms']:.2f}x, cold/read {cold['single_ms'] / read['single_ms']:.2f}x; "
                  f"recall mmap == read: {mapped['recall'] == read['recall']}"
                  + (f"; reconstruct_rows from the mapped file {mapped['reconstruct_rows_per_s']:,.0f} rows/s"
                     if "reconstruct_rows_per_s" in mapped else ""))
    by = {(r["N"], r["type"]): r for r in rows}
    for (count, kind), row in by.items():
        flat = by.get((count, "flat"))
        if flat and kind != "flat":
            print(f"{count:,} {kind} vs flat: batch q/s {flat['read']['batch_ms'] / row['read']['batch_ms']:.1f}x, "
                  f"single {flat['read']['single_ms'] / row['read']['single_ms']:.1f}x, file {row['bytes'] / flat['bytes']:.2f}x")
        sq8 = by.get((count, "sq8"))
        if sq8 and kind == "ivfpq":
            kept = {r["type"]: (r["bytes"] + r.get("vectors_bytes", 0)) / r["N"] for r in (row, sq8)}
            print(f"{count:,} ivfpq vs sq8: index + float32 vectors kept {kept['ivfpq']:,.0f} vs {kept['sq8']:,.0f} B/vector, "
                  f"file {row['bytes'] / sq8['bytes']:.2f}x, build {row['build_s'] / sq8['build_s']:.2f}x, "
                  f"batch latency {row['read']['batch_ms'] / sq8['read']['batch_ms']:.2f}x, mmap RSS "
                  f"{row['mmap']['rss_after_mib'] / sq8['mmap']['rss_after_mib']:.2f}x, recall {row['read']['recall']:.3f} vs {sq8['read']['recall']:.3f}")


# ---------------------------------------------------------------- OPQ vs PQ


def compare_opq(workdir: Path, count: int, dim: int, n_queries: int) -> None:
    """recall@10 of IVF,PQ and OPQ,IVF,PQ at equal code bytes, at the same nprobe and k_factor."""
    vectors = vectors_file(workdir, count, dim)
    queries_path, truth_path = queries_and_truth(workdir, count, dim, n_queries, vectors)
    queries, truth = np.load(queries_path), np.load(truth_path)
    m, nlist = faiss_index.pq_subquantizers(dim), faiss_index.nlist_for(count)
    rng = np.random.default_rng(0)
    train = vector_file.read_rows(vectors, np.sort(rng.choice(count, min(count, max(64 * nlist, faiss_index.PQ_TRAIN_MIN)), replace=False)))
    print(f"OPQ vs PQ at {m} bytes/code, N={count:,}, d={dim}, nlist={nlist}: recall@10 of {n_queries} fresh queries")
    print(f"{'factory':>40} {'train+add s':>11} " + " ".join(f"{f'np={p},kf={f}':>14}" for p in (8, 32) for f in (1, 4)))
    for factory in (f"IDMap,IVF{nlist},PQ{m},RFlat", f"IDMap,OPQ{m}_{dim},IVF{nlist},PQ{m},RFlat"):
        index = faiss_index.create(faiss_index.IndexPlan("ivfpq", factory, "user"), dim)
        started = time.perf_counter()
        index.train(train)
        for first, chunk in vector_file.iter_chunks(vectors):
            index.add_with_ids(chunk, np.arange(first, first + len(chunk), dtype=np.int64))
        seconds = time.perf_counter() - started
        cells = []
        for nprobe in (8, 32):
            for factor in (1, 4):
                faiss_index.set_search_params(index, {"nprobe": nprobe, "k_factor_rf": factor})
                _, found = index.search(queries, K)
                cells.append(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth)]))
        print(f"{factory:>40} {seconds:>11.0f} " + " ".join(f"{c:>14.3f}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e6", help="comma-separated gallery sizes, e.g. 1e6,1e7")
    parser.add_argument("--types", default=None, help="index types (flat, hnsw, ivf, sq8 = IVF{L},SQ8 as auto builds it past the "
                        "HNSW budget, ivfpq; default: flat,hnsw,ivf,sq8,ivfpq up to 10^6; ivfpq,sq8 above)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--workdir", default=None, help="where vectors, ground truth and indexes go (default: a temporary folder)")
    parser.add_argument("--train-per-list", type=int, default=None,
                        help=f"k-means sample per inverted list (default: the project's {faiss_index.TRAIN_POINTS_PER_LIST})")
    parser.add_argument("--compare-opq", default=None, metavar="N", help="only compare OPQ with plain PQ on N vectors")
    parser.add_argument("--report", nargs="+", metavar="WORKDIR", help="only print the table of earlier runs (their rows.jsonl)")
    # child processes
    parser.add_argument("--child", choices=("build", "query"), help=argparse.SUPPRESS)
    parser.add_argument("--index-type", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    parser.add_argument("--factory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_per_list:
        faiss_index.TRAIN_POINTS_PER_LIST = args.train_per_list  # a smaller k-means sample, said in the output
    if args.child:
        print(json.dumps(child_build(args) if args.child == "build" else child_query(args)))
        return

    if args.report:
        latest = {}
        for folder in args.report:
            for line in open(Path(folder) / "rows.jsonl"):
                row = json.loads(line)
                latest[(row["N"], row["type"])] = row  # a rerun replaces the earlier row
        rows = sorted(latest.values(), key=lambda r: (r["N"], ["flat", "hnsw", "ivf", "sq8", "ivfpq"].index(r["type"])))
        print_header()
        for row in rows:
            print_row(row)
        print_ratios(rows)
        return
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="siamcli-bench-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    faiss = faiss_index.faiss_module()
    if args.compare_opq:
        compare_opq(workdir, int(float(args.compare_opq)), args.dim, args.queries)
        return
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs, dim {args.dim}, "
          f"{args.queries} queries (batch) / {SINGLE_QUERIES} (one at a time), k-means sample "
          f"{faiss_index.TRAIN_POINTS_PER_LIST} points per list, recall target {faiss_index.RECALL_TARGET} (tuned to "
          f"{faiss_index.RECALL_TARGET + faiss_index.TUNING_MARGIN} on 1,000 held-out gallery vectors)", flush=True)
    rows = []
    for count in (int(float(s)) for s in args.sizes.split(",")):
        started = time.perf_counter()
        vectors = vectors_file(workdir, count, args.dim)
        queries, truth = queries_and_truth(workdir, count, args.dim, args.queries, vectors)
        print(f"N={count:,}: vectors and exact ground truth ready in {time.perf_counter() - started:.0f}s", flush=True)
        types = args.types.split(",") if args.types else (["flat", "hnsw", "ivf", "sq8", "ivfpq"] if count <= 1_000_000 else ["ivfpq", "sq8"])
        print_header()
        for index_type in types:
            row = run_type(workdir, count, args.dim, index_type, vectors, queries, truth, args.train_per_list)
            rows.append(row)
            print_row(row)
            with open(workdir / "rows.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")
    print_ratios(rows)
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
