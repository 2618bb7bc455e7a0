"""Search at scale: `auto` vs exact `flat`, measured in one run for each gallery size N.

For N unit vectors of dimension 256 and 1,000 queries: build time (and, for `auto`, the recall
tuning that `siamcli index` does), index memory, queries/s, and recall@10 of `auto` against
`flat` (exact) on the queries. The engine code is the one `siamcli index` runs
(`siamcli.index.faiss_index`: plan_index → build_and_tune, which holds out up to 1,000 vectors
to measure recall@10 and tune the search setting, then adds them), fed from a vectors file.

Data: embedding-like synthetic vectors, not uniform noise (on which no index beats brute force,
and which no trained embedding produces): N/10 "identities" with centres in a 32-d latent
space, mapped into 256-d; each vector is its identity's centre plus latent and ambient noise,
normalised. Queries are fresh vectors of existing identities (like new photos of known
people), never in the index.

Target (issue 3): at N = 10^6, `auto` ≥ 10× the queries/s of `flat` at recall@10 ≥ 0.95.

    python benchmarks/bench_search.py                        # N = 1e4, 1e5 (a few minutes)
    python benchmarks/bench_search.py --sizes 1e4,1e5,1e6    # the full table (≈ 10 min, 4 GB RAM)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamcli.index import faiss_index  # noqa: E402
from siamcli.index.vectors import VectorWriter  # noqa: E402

LATENT = 32
PER_IDENTITY = 10


class EmbeddingLike:
    """Identities in a low-dimensional latent space, seen through a random linear map."""

    def __init__(self, count: int, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.mix = (rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
        self.centres = rng.normal(size=(max(1, count // PER_IDENTITY), LATENT)).astype(np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        identity = rng.integers(0, len(self.centres), n)
        latent = self.centres[identity] + 0.5 * rng.normal(size=(n, LATENT)).astype(np.float32)
        x = latent @ self.mix + 0.05 * rng.normal(size=(n, self.dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def index_mib(index) -> float:
    return faiss_index.faiss_module().serialize_index(index).nbytes / 2**20


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)]))


def timed_search(index, queries: np.ndarray, k: int = 10, repeats: int = 1):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        scores, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - started)
    return len(queries) / best, rows


def run_size(count: int, dim: int, n_queries: int, work: Path) -> dict:
    data = EmbeddingLike(count, dim)
    rng = np.random.default_rng(1)
    path = work / f"vectors_{count}.npy"
    with VectorWriter(path, dim, capacity=count) as writer:
        for start in range(0, count, 65_536):
            writer.write(data.sample(min(65_536, count - start), rng))
    queries = data.sample(n_queries, np.random.default_rng(2))
    row = {"N": count}

    before = rss_mib()
    started = time.perf_counter()
    flat, _ = faiss_index.build_and_tune(path, faiss_index.plan_index("flat", count, dim))
    row["flat_build_s"] = time.perf_counter() - started
    row["flat_mib"] = index_mib(flat)
    row["flat_rss_mib"] = rss_mib() - before
    row["flat_qps"], exact = timed_search(flat, queries, repeats=2 if count <= 100_000 else 1)
    del flat

    plan = faiss_index.plan_index("auto", count, dim)
    before = rss_mib()
    started = time.perf_counter()
    auto, tuning = faiss_index.build_and_tune(path, plan)
    row["auto_build_s"] = time.perf_counter() - started
    if not tuning.reached:  # what `siamcli index` does when auto misses the target
        plan = faiss_index.FLAT
        auto, tuning = faiss_index.build_and_tune(path, plan)
    row["auto_factory"] = plan.factory
    row["auto_params"] = ",".join(f"{k}={v}" for k, v in tuning.params.items()) or "-"
    row["auto_mib"] = index_mib(auto)
    row["auto_rss_mib"] = rss_mib() - before
    row["auto_qps"], found = timed_search(auto, queries, repeats=2 if count <= 100_000 else 1)
    row["auto_recall"] = recall_at_10(found, exact)
    row["manifest_recall"] = tuning.recall_at_10
    row["speedup"] = row["auto_qps"] / row["flat_qps"]
    path.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e4,1e5", help="comma-separated gallery sizes, e.g. 1e4,1e5,1e6")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    faiss = faiss_index.faiss_module()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, {args.queries} queries, "
          f"auto rule: Flat ≤ {faiss_index.FLAT_MAX:,} < HNSW32 (≤ {faiss_index.MEMORY_BUDGET / 2**30:.0f} GiB) < IVF,SQ8; "
          f"recall target {faiss_index.RECALL_TARGET}")
    header = (f"{'N':>9} | {'flat build':>10} {'MiB':>7} {'q/s':>8} | {'auto':>17} {'params':>12} {'build+tune':>10} "
              f"{'MiB':>7} {'q/s':>8} {'recall@10':>9} {'manifest':>8} | {'auto/flat q/s':>13}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="siamcli-bench-search-") as work:
        for count in sizes:
            r = run_size(count, args.dim, args.queries, Path(work))
            print(f"{r['N']:>9,} | {r['flat_build_s']:>9.1f}s {r['flat_mib']:>7.0f} {r['flat_qps']:>8.0f} | "
                  f"{r['auto_factory']:>17} {r['auto_params']:>12} {r['auto_build_s']:>9.1f}s "
                  f"{r['auto_mib']:>7.0f} {r['auto_qps']:>8.0f} {r['auto_recall']:>9.3f} {r['manifest_recall']:>8.3f} | "
                  f"{r['speedup']:>12.1f}x", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
