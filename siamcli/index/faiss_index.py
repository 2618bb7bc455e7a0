"""FAISS index types, the `auto` rule, building from a vectors file, and measured recall@10.

Every index searches by inner product (`METRIC_INNER_PRODUCT`) over unit-length embeddings,
so the score is the cosine similarity. The id FAISS returns is the row in items.csv: Flat and
ivfpq number rows by position (rows are added in order); HNSW (wrapped in `IDMap`) and IVF are
given the row numbers explicitly, so rows can be added in any order.

The `auto` rule (N = number of gallery images, d = embedding dim):

    N ≤ 50,000                    Flat                 exact; brute force costs ≲ 1 ms per query
    N > 50,000, HNSW fits 8 GiB   IDMap,HNSW32,Flat    graph search, ≥ 10× the queries/s of Flat
                                                       at recall@10 ≥ 0.95 by 10^6 vectors
                                                       (benchmarks/bench_search.py); takes
                                                       N·(4d + 2·32·4 + 16) bytes: up to ≈ 6.6 M
                                                       vectors at d = 256
    past that                     ivfpq                IVF{L}_HNSW32,PQ{d/8},Refine(SQ8) (below):
                                                       N·(d + d/8 + 8) bytes, 296 at d = 256,
                                                       and the store keeps no float32 copy

HNSW builds at ≈ 0.2–0.4 ms per vector on 2 cores (minutes for 10^6): far less than embedding
the images took, so build time does not limit it; memory does. `--index-type ivf` gives IVF with
raw vectors (`IVF{L},Flat`) where they fit in 8 GiB, SQ8 codes (`IVF{L},SQ8`) past that.

ivfpq, `IVF{L}[_HNSW32],PQ{m}[x{b}],Refine(SQ8)` — the compact index:
    IVF{L}      the same L lists as ivf (L = power of 2 nearest 4·√N, ≥ 39 points per list,
                k-means on ≤ 64·L sampled vectors); from 4,096 lists on the coarse quantizer is
                an HNSW graph over the centroids (`_HNSW32`), since assigning 10^7 vectors to
                16,384 centroids by brute force alone takes ≈ 25 min on 2 cores
    PQ{m}       one 8-bit code per 16 dimensions, per 8 from 2·10^6 vectors on (PQ16 / PQ32 at
                d = 256; see PQ_FINE_FROM; fewer bits for a gallery
                under 10^4, too small to train 256 centroids per codebook): only proposes
                candidates; no polysemous training (index_factory's default: Hamming
                pre-filtering siamcli never uses)
    Refine(SQ8) FAISS's IndexRefine over an IndexScalarQuantizer(QT_8bit): the PQ search
                proposes k_factor·k candidates, re-scored against 8-bit vectors (one byte a
                dimension, 256 steps over each dimension's trained range) — scores are cosines
                to within ≈ 0.005 (thresholds apply as calibrated; tests/test_faiss_compact.py)
These 8-bit vectors are also the gallery's only stored copy: they sit in row order (no IDMap:
ids are positions, 8 bytes a vector saved), `reconstruct_rows` decodes them (a mapped file
too), and `keeps_vectors` tells the store it needs no embeddings.npy. A rebuild from decoded
vectors searches as well as the original (recall within 0.01, tested). The build puts every
row into the 8-bit storage and all but the held-out rows into the IVF lists, with their row
numbers, so tuning sees an index without the held-out rows; they join the lists after it.
Updates add rows in order (`add_rows`, start_row = ntotal).

Size at d = 256: 256 (SQ8) + 16 (PQ16) + 8 (the list's id) = 280 B a vector, plus centroids and
codebooks: 285.6 B measured at 10^6, 282 B at 10^7 (benchmarks/results/large_gallery.txt). But
at 10^7, PQ16 codes rank candidates too coarsely: recall@10 0.907 on fresh queries at nprobe
1,024 and k_factor 64. From PQ_FINE_FROM (2·10^6) vectors on, the codes are PQ{d/8}: 298 B
a vector measured at 10^7, recall@10 0.956 at nprobe 384 and k_factor 64, and with the store's
96 B of per-row metadata (items.sqlite) 394 ≤ 400 B a vector. The old ivfpq
(`IDMap,...,PQ32,RFlat`: float32 re-ranking, 1,074 B, plus embeddings.npy, 1,024 B) held the
vectors twice. SQ6 or fp16 refinement was not needed: SQ8 re-ranking reaches
the target (measurements below and in docs/scaling.md).

Tuning raises nprobe at k_factor_rf = 64 (doubling, then bisecting, as for ivf), then halves
k_factor_rf while recall@10 stays ≥ 0.96 (PQ16 codes rank candidates coarsely: the re-ranking
depth does the work); with an HNSW quantizer its efSearch is 2·nprobe (at FAISS's default 16 the
graph returned too few good lists and recall@10 stopped at 0.865 at 10^6, whatever nprobe).
All go into search_params. (search.py searches at least 10 deep, the depth recall was tuned at,
so --k 1 re-ranks as many candidates as were measured.)

OPQ (a learned rotation before PQ) was measured against plain PQ at equal code bytes (32, with
the former float32 re-ranking) on benchmarks/bench_large_gallery.py's data (N = 10^5, d = 256,
IVF1024, nprobe 128, 1,000 fresh queries; `--compare-opq`): recall@10 0.811 → 0.938 without
re-ranking (k_factor 1), but 0.977 → 0.985 at k_factor 8 and 0.985 → 0.985 at k_factor 32, for
6.5× the train+add time (412 s vs 63 s on 2 busy cores). With re-ranking, tuning reaches the
same recall by re-ranking a few more candidates, so OPQ does not pay here and is not used.

Why `auto` picks ivfpq past the HNSW budget (≈ 6.6 M vectors at d = 256), not IVF{L},SQ8 as
before: auto leaves HNSW only when its graph and float32 vectors (≈ 1.3 KB a vector at d = 256)
no longer fit 8 GiB; there, what matters is what the index directory keeps on disk and in the
page cache, at recall@10 ≥ 0.95. Measured at 10^6, d = 256, 1,000 fresh queries
(benchmarks/results/large_gallery.txt, 2 busy cores):
                      on disk, B a vector                 recall@10   single query, mapped
    ivfpq (PQ16)      286 (index.faiss, nothing beside)   0.958       2.8 ms warm, 11 ms cold cache
    IVF4096,SQ8       268 + 1,024 (embeddings.npy) = 1,292  0.963     3.0 ms warm, 29 ms cold cache
IVF,SQ8's 8-bit codes sit in list order, so the store must keep the float32 vectors beside it to
rebuild; ivfpq's are in row order and are that copy (4.5× less on disk). A query scans 24 bytes
a listed vector (PQ code and id) instead of 264 and reads only the k_factor·10 8-bit rows it
re-ranks, so from a cold page cache it is ≈ 3× faster. Both score from 8-bit vectors (cosines to
within ≈ 0.005). Its build peaks at 1.2 GB at 10^6 (the 8-bit vectors, the lists and the k-means
sample: ≈ 4 GB at 10^7), against 0.7 GB for SQ8's. (The warm/cold SQ8 figures are from an earlier
run on a less loaded machine; in the same run as ivfpq's, SQ8's queries ran beside a 10^7 build
and measured 15 / 33 ms.)

Recall is measured the way queries arrive: on vectors the index has not seen. An approximate
build holds out a random sample of up to 1,000 gallery vectors (a tenth of a small gallery),
builds over the rest, and compares its top 10 for each held-out vector with exact search over
the same rest (a tie with the 10th exact score counts as a hit). The search parameter
(`efSearch` for HNSW, `nprobe` for IVF) starts low and doubles until recall@10 on the sample
reaches 0.96 — the target 0.95 plus a margin of two standard errors of a 1,000-query estimate,
so that new queries, not only those measured, get ≥ 0.95 — then bisects back towards the
smallest value that still does; then the held-out vectors are added too. (Measuring with gallery vectors that are in the index, even leaving each one's
own row out of its answer, overstates recall: at 10^5 it read 0.98 where new queries got 0.91.)
The parameter and the recall go into the manifest. If `auto` cannot reach the target it builds
Flat instead, so `auto` never answers below 0.95; an explicitly requested type keeps its best
setting and reports its recall.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from siamcli.choices import IndexType
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.index import vectors as vector_file
from siamcli.index.hints import REBUILD

INDEX_TYPES = IndexType.values()
FLAT_MAX = 50_000  # auto: exact search up to this many images
MEMORY_BUDGET = 8 << 30  # auto: HNSW (raw vectors + graph) up to this size, ivfpq past it
HNSW_M = 32  # graph degree: the usual speed/recall sweet spot for d in 64…512
HNSW_EF_CONSTRUCTION = 40  # FAISS's default
TRAIN_POINTS_PER_LIST = 64  # k-means sample per inverted list (FAISS asks for 39…256)
MIN_POINTS_PER_LIST = 39  # FAISS warns below this
RECALL_TARGET = 0.95
TUNING_MARGIN = 0.01  # tune to 0.96 on the sample, so new queries (not only those measured) stay ≥ 0.95
RECALL_K = 10
RECALL_QUERIES = 1000  # held-out vectors recall is measured on (at most a tenth of the gallery)
EXACT_CHUNK_ROWS = 8192  # exact search scores (queries × chunk) at a time: 32 MiB for 1,000 queries
SEARCH_PARAMETER = {"hnsw": "efSearch", "ivf": "nprobe", "ivfpq": "nprobe"}  # the one tune() raises first
RERANK_PARAMETER = "k_factor_rf"  # ivfpq: IndexRefine re-scores k_factor·k PQ candidates exactly
K_FACTOR_TUNE, K_FACTOR_MIN = 64, 1  # ivfpq: nprobe is tuned at k_factor 64, then k_factor halves while recall holds
QUANTIZER_EF_PER_PROBE = 2  # ivfpq with an HNSW coarse quantizer: its efSearch = 2·nprobe (at FAISS's
                            # default 16 the graph misses lists: recall@10 stopped at 0.865 at 10^6)
PQ_SUBVECTOR_DIM = 16  # ivfpq: one 8-bit PQ code per 16 dimensions (16 bytes at d = 256; module docstring) …
PQ_FINE_FROM = 2_000_000  # … and per 8 dimensions from this many vectors on: at 10^7, PQ16 candidates reached
                          # recall@10 0.907 at the deepest setting, PQ32 0.956 (both measured, docs/scaling.md);
                          # auto picks ivfpq only past ≈ 6.6 M, so it always gets PQ32
REFINE_CODES = "SQ8"  # ivfpq: re-ranks from, and keeps for rebuilds, d bytes a vector (per-dimension 8-bit steps)
SQ_RANGE_MARGIN = 0.05  # ivfpq: each dimension's 8-bit range is the training sample's min…max widened by 5% of it
                        # on both sides, so rows added later (or missed by the sample) are rarely clipped:
                        # 1e6 × 256 data, 262 k sample, 100 k other rows: clipped rows 48 → 2, worst top-10
                        # score error 0.0035 → 0.0022, mean per-dimension error 0.00048 → 0.00053
PQ_TRAIN_MIN = 256 * 39  # 8-bit codebooks: 256 centroids × FAISS's 39 points each
HNSW_QUANTIZER_MIN_LISTS = 4096  # ivfpq: an HNSW coarse quantizer from this many lists on (assigning
                                 # 10^7 vectors to 16,384 centroids by brute force takes ≈ 25 min on 2 cores)
EF_SEARCH_START, EF_SEARCH_MAX = 16, 4096
RETUNE_GROWTH = 1.25  # an update that only adds rows keeps the measured setting up to this growth


def faiss_module():
    """Import FAISS (late: `siamcli --help` must not pay for it)."""
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat | hnsw | ivf | ivfpq (never auto: auto resolves to one of them)
    factory: str  # FAISS index_factory string, as stored in the manifest
    chosen_by: str  # "auto" or "user"

    @property
    def approximate(self) -> bool:
        return self.index_type != "flat"

    @property
    def nlist(self) -> int:
        found = re.search(r"(?:^|,)IVF(\d+)", self.factory)
        return int(found.group(1)) if found else 0


@dataclass
class Tuning:
    recall_at_10: float  # measured on `sample` held-out gallery vectors against exact search
    params: dict = field(default_factory=dict)  # {"efSearch": 64} | {"nprobe": 32} | {"nprobe": 32, "k_factor_rf": 4} | {}
    sample: int = 0  # queries the recall was measured on (0: exact index, recall 1 by construction)
    reached: bool = True  # recall_at_10 ≥ target


def nlist_for(count: int) -> int:
    """Inverted lists for N vectors: the power of 2 nearest 4·√N, with ≥ 39 training points each."""
    if count < 2 * MIN_POINTS_PER_LIST:
        return 1
    power = 2 ** round(math.log2(4 * math.sqrt(count)))
    while power > 1 and power * MIN_POINTS_PER_LIST > count:
        power //= 2
    return max(1, power)


def pq_subquantizers(dim: int, count: int = 0) -> int:
    """PQ codes per vector: one per PQ_SUBVECTOR_DIM dimensions (half that from PQ_FINE_FROM
    vectors on), a divisor of dim (FAISS needs one)."""
    m = max(1, dim // (PQ_SUBVECTOR_DIM // 2 if count >= PQ_FINE_FROM else PQ_SUBVECTOR_DIM))
    while dim % m:
        m -= 1
    return m


def pq_bits(count: int) -> int:
    """Bits per PQ code: 8, or fewer for a gallery too small to train 256 centroids per codebook."""
    bits = 8
    while bits > 1 and count < (1 << bits) * MIN_POINTS_PER_LIST:
        bits -= 1
    return bits


def ivfpq_factory(count: int, dim: int) -> str:
    """IVF{L}[_HNSW32],PQ{M}[x{b}],Refine(SQ8) — see the module docstring."""
    nlist = nlist_for(count)
    quantizer = f"_HNSW{HNSW_M}" if nlist >= HNSW_QUANTIZER_MIN_LISTS else ""
    bits = pq_bits(count)
    codes = f"PQ{pq_subquantizers(dim, count)}" + (f"x{bits}" if bits != 8 else "")
    return f"IVF{nlist}{quantizer},{codes},Refine({REFINE_CODES})"


def ivfpq_bytes(count: int, dim: int) -> int:
    """index.faiss of ivfpq: 8-bit vectors (re-ranking, rebuilds) + PQ codes + the list's id."""
    return count * (dim + pq_subquantizers(dim, count) + 8)


# ivfpq's factory: IVF lists of PQ codes re-ranked from scalar-quantised vectors kept in row order (no IDMap)
_ROW_ORDERED_REFINE = re.compile(r"^IVF\d+[^,]*,PQ[^,]+,Refine\(SQ(?:8|6|4|fp16|bf16)\)$")


def keeps_vectors(plan_or_factory: IndexPlan | str) -> bool:
    """Whether the store must keep the vectors beside the index (embeddings.npy) for future rebuilds.

    False when the index itself holds every row's vector in row order, readable with
    `reconstruct_rows`: ivfpq's `...,Refine(SQ8)` (no IDMap: ids = rows). True for every
    other factory, the old `IDMap,...,RFlat` ivfpq included (its vectors are in insertion
    order, held-out rows last, not row order).
    """
    factory = plan_or_factory.factory if isinstance(plan_or_factory, IndexPlan) else str(plan_or_factory)
    return _ROW_ORDERED_REFINE.search(factory) is None


def reconstruct_rows(index, start: int, count: int) -> np.ndarray:
    """float32 (count, d): rows start … start+count-1 as the index stores them (SQ8: decoded 8-bit codes).

    For an index `keeps_vectors` says holds its own vectors (also works on Flat, exactly).
    Works on a memory-mapped index: only those rows' codes are read. SQ8 decodes each dimension
    to within half an 8-bit step of its range (mean |x̂ - x| 0.0005, 99.9th percentile 0.0013 at
    d = 256 on the benchmark's embeddings; a row outside the trained range is clipped: ≈ 2 in
    100,000), so decoded vectors are unit length to within ≈ 0.01.
    """
    storage = _row_storage(index)
    if storage is None:
        raise ValueError(f"{type(index).__name__} does not hold its vectors in row order; read them from the vectors file")
    if start < 0 or count < 0 or start + count > storage.ntotal:
        raise IndexError(f"rows {start}…{start + count - 1} are outside the index's 0…{storage.ntotal - 1}")
    if count == 0:
        return np.zeros((0, index.d), np.float32)
    return np.ascontiguousarray(storage.reconstruct_n(start, count), dtype=np.float32)


def _row_storage(index):
    """The flat codes that hold row i at position i (ivfpq's refine vectors, Flat's vectors), else None."""
    faiss = faiss_module()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.refine_index)
    return index if isinstance(index, faiss.IndexFlatCodes) else None


def hnsw_bytes(count: int, dim: int) -> int:
    """Approximate memory of HNSW{M},Flat: raw vectors, level-0 links (2·M ids), upper levels."""
    return count * (4 * dim + 2 * HNSW_M * 4 + 16)


FLAT = IndexPlan("flat", "Flat", "auto")


def check_index_type(index_type: str) -> None:
    """--index-type must be one of INDEX_TYPES, else UserError (the one check, used before any work starts)."""
    IndexType.check(index_type, "--index-type")


def plan_index(index_type: str, count: int, dim: int) -> IndexPlan:
    """Resolve --index-type (auto|flat|hnsw|ivf|ivfpq) for a gallery of `count` vectors (module rule)."""
    check_index_type(index_type)
    chosen_by = "user"
    if index_type == "auto":
        chosen_by = "auto"
        if count <= FLAT_MAX:
            index_type = "flat"
        elif hnsw_bytes(count, dim) <= MEMORY_BUDGET:
            index_type = "hnsw"
        else:
            index_type = "ivfpq"
    if index_type == "flat":
        return IndexPlan("flat", "Flat", chosen_by)
    if index_type == "hnsw":
        return IndexPlan("hnsw", f"IDMap,HNSW{HNSW_M},Flat", chosen_by)
    if index_type == "ivfpq":
        return IndexPlan("ivfpq", ivfpq_factory(count, dim), chosen_by)
    codes = "SQ8" if count * dim * 4 > MEMORY_BUDGET else "Flat"
    return IndexPlan("ivf", f"IVF{nlist_for(count)},{codes}", chosen_by)


def create(plan: IndexPlan, dim: int):
    faiss = faiss_module()
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.index_type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if plan.index_type == "ivfpq":
        # index_factory turns on polysemous training (codes ordered for Hamming pre-filtering,
        # which siamcli never uses): most of the training time, for nothing.
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
        refine = faiss.downcast_index(index.refine_index)
        if isinstance(refine, faiss.IndexScalarQuantizer):
            refine.sq.rangestat_arg = SQ_RANGE_MARGIN
    return index


def add_rows(index, vectors_path, start_row: int = 0, skip: np.ndarray | None = None) -> None:
    """Add the file's rows from `start_row` on, except those where `skip` is True, as ids = rows.

    Flat and ivfpq (`...,Refine(SQ8)`: ids are positions in its vector storage) take rows in
    order only: `start_row` must be their ntotal, and they are never given `skip` (a build
    that holds rows out uses `_add_rows_holding_out`).
    """
    with_ids = _row_storage(index) is None  # HNSW (IDMap), IVF: given the row numbers
    if not with_ids and skip is not None:
        raise ValueError(f"{type(index).__name__} takes the file's rows in order, none skipped")
    (count, _), _ = vector_file.read_shape(vectors_path)
    adding = count - start_row - (int(skip[start_row:].sum()) if skip is not None else 0)
    _reserve(index, index.ntotal + adding)
    for first, chunk in vector_file.iter_chunks(vectors_path):
        rows = np.arange(first, first + len(chunk))
        keep = rows >= start_row
        if skip is not None:
            keep &= ~skip[first:first + len(chunk)]
        if not keep.any():
            continue
        if not keep.all():  # (a copy only when rows are left out)
            chunk, rows = np.ascontiguousarray(chunk[keep]), rows[keep]
        if with_ids:
            index.add_with_ids(chunk, rows.astype(np.int64))
        else:
            if rows[0] != index.ntotal or rows[-1] - rows[0] != len(rows) - 1:
                raise ValueError(f"{type(index).__name__} takes the file's rows in order")
            index.add(chunk)


def _add_rows_holding_out(index, vectors_path, skip: np.ndarray) -> None:
    """ivfpq's build: every row into the refine vectors (position = row), the rest into the IVF lists.

    The IVF lists are given row numbers as ids, so the index answers rows, as if the held-out
    rows were not there (the re-ranking only reads the rows the lists propose), until
    `_add_held_out` puts them in the lists too. No IDMap: its 8 bytes a vector are not needed.
    """
    faiss = faiss_module()
    base, refine = faiss.downcast_index(index.base_index), faiss.downcast_index(index.refine_index)
    if index.ntotal or base.ntotal or refine.ntotal:
        raise ValueError("_add_rows_holding_out builds an empty index")
    for first, chunk in vector_file.iter_chunks(vectors_path):
        refine.add(chunk)
        keep = ~skip[first:first + len(chunk)]
        rows = np.arange(first, first + len(chunk), dtype=np.int64)
        if not keep.all():
            chunk, rows = np.ascontiguousarray(chunk[keep]), rows[keep]
        base.add_with_ids(chunk, rows)
    index.ntotal = refine.ntotal


def _add_held_out(index, vectors, rows: np.ndarray) -> None:
    """The held-out rows, once recall is measured: into HNSW/IVF by id, into ivfpq's IVF lists only."""
    faiss = faiss_module()
    if isinstance(index, faiss.IndexRefine):
        faiss.downcast_index(index.base_index).add_with_ids(vectors, rows.astype(np.int64))
    else:
        index.add_with_ids(vectors, rows.astype(np.int64))


def _reserve(index, rows: int) -> None:
    """Allocate the vector storage of Flat / HNSW,Flat / ivfpq's Refine(SQ8) once, at its final size.

    Added chunk by chunk, FAISS's std::vector would grow by doubling, copying as it goes: a
    peak of up to twice the index. Resizing up then back to the current size keeps the
    capacity (std::vector never gives it back), so the adds that follow never reallocate.
    """
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    storage = inner
    if isinstance(inner, faiss.IndexHNSW):
        storage = faiss.downcast_index(inner.storage)
    elif isinstance(inner, faiss.IndexRefine):  # ivfpq: the 8-bit vectors re-ranking reads
        storage = faiss.downcast_index(inner.refine_index)
    if isinstance(storage, faiss.IndexFlatCodes):
        used = storage.codes.size()
        storage.codes.resize(rows * storage.code_size)
        storage.codes.resize(used)


def holdout_size(count: int) -> int:
    return min(RECALL_QUERIES, count // 10) if count >= 20 else 0


def build_and_tune(vectors_path, plan: IndexPlan, seed: int = 0, target: float = RECALL_TARGET,
                   on_stage: Callable[[str], None] | None = None):
    """(index over every row of the file, Tuning): see the module docstring for the protocol."""
    (count, dim), _ = vector_file.read_shape(vectors_path)
    stage = on_stage or (lambda text: None)
    index = create(plan, dim)
    if not plan.approximate:
        stage(f"adding {count} vectors to {plan.factory}")
        add_rows(index, vectors_path)
        return index, Tuning(recall_at_10=1.0)
    rng = np.random.default_rng(seed)
    held_out = np.sort(rng.choice(count, size=holdout_size(count), replace=False))
    skip = np.zeros(count, bool)
    skip[held_out] = True
    if not index.is_trained:
        stage(f"training {plan.factory}")
        pool = np.flatnonzero(~skip)
        size = TRAIN_POINTS_PER_LIST * max(plan.nlist, 1)
        if plan.index_type == "ivfpq":  # the PQ codebooks need their own ≥ 39 points per centroid
            size = max(size, PQ_TRAIN_MIN)
        size = min(len(pool), size)
        index.train(vector_file.read_rows(vectors_path, np.sort(rng.choice(pool, size=size, replace=False))))
    stage(f"adding {count} vectors to {plan.factory}")
    # Room for every row, held-out ones included: reserved only for the rest, the vector
    # storage doubled when those came last (build peak 20.5 GB for the old float32 ivfpq at 10^7).
    _reserve(index, count)
    if _row_storage(index) is not None:  # ivfpq: ids are positions in the refine vectors
        _add_rows_holding_out(index, vectors_path, skip)
    else:
        add_rows(index, vectors_path, skip=skip)
    if len(held_out):
        stage("measuring recall@10 on held-out vectors against exact search")
        tuning = tune(index, plan, RecallProbe(vectors_path, held_out, skip), target)
        _add_held_out(index, vector_file.read_rows(vectors_path, held_out), held_out)
    else:  # a gallery this small is searched exhaustively at the largest setting
        tuning = Tuning(recall_at_10=1.0, params=_exhaustive(plan), sample=0)
        set_search_params(index, tuning.params)
    return index, tuning


def set_search_params(index, params: dict) -> None:
    """Apply {"efSearch": n} / {"nprobe": n[, "k_factor_rf": f]} to a loaded index (no-op for {})."""
    if not params:
        return
    faiss = faiss_module()
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as exc:
            raise CorruptArtifactError(f"search parameter {name}={value} does not apply to this index; {REBUILD}") from exc


def exact_neighbours(vectors_path, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over the file's rows: (scores (m, k), rows (m, k)), best first.

    Rows where `exclude` is True are left out. Memory is one (m × 8192) score block, however
    big the file; ties go to the lower row, as in FAISS's flat search.
    """
    m = len(queries)
    best_scores = np.full((m, k), -np.inf, np.float32)
    best_rows = np.full((m, k), -1, np.int64)
    for first, chunk in vector_file.iter_chunks(vectors_path, EXACT_CHUNK_ROWS):
        scores = queries @ chunk.T  # (m, rows)
        if exclude is not None:
            scores[:, exclude[first:first + len(chunk)]] = -np.inf
        if scores.shape[1] > k:  # keep the chunk's k best before the exact merge
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(scores, top, axis=1)
            rows = top + first
        else:
            rows = np.broadcast_to(np.arange(first, first + len(chunk)), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        order = np.lexsort((all_rows, -all_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_rows = np.take_along_axis(all_rows, order, axis=1)
    return best_scores, best_rows


class RecallProbe:
    """Recall@10 of an index built without the `queries` rows, against exact search over the rest.

    The exact answers are computed once (one pass over the file), so trying several search
    parameters only costs the approximate searches.
    """

    def __init__(self, vectors_path, query_rows: np.ndarray, excluded: np.ndarray):
        (count, _), _ = vector_file.read_shape(vectors_path)
        self.vectors_path = vectors_path
        self.rows = np.asarray(query_rows, np.int64)
        self.queries = vector_file.read_rows(vectors_path, self.rows)
        self.k = min(RECALL_K, int(count - excluded.sum()))
        self.exact_scores, self.exact_rows = exact_neighbours(vectors_path, self.queries, self.k, excluded)

    def recall(self, index) -> float:
        _, found = index.search(self.queries, self.k)
        unique = np.unique(found[found >= 0])
        true_scores = dict(zip(unique.tolist(), vector_file.read_rows(self.vectors_path, unique) @ self.queries.T))
        hits = 0
        for i in range(len(self.rows)):
            exact = set(self.exact_rows[i].tolist())
            kth = self.exact_scores[i, -1]
            # A tie with the k-th exact score is as good an answer as the one exact search kept.
            hits += sum(1 for row in found[i] if row >= 0 and (row in exact or true_scores[row][i] >= kth - 1e-6))
        return hits / (len(self.rows) * self.k)


def tune(index, plan: IndexPlan, probe: RecallProbe, target: float = RECALL_TARGET) -> Tuning:
    """Raise the search parameter until recall@10 ≥ target + margin, then bisect back (module docstring)."""
    name = SEARCH_PARAMETER[plan.index_type]
    aim = min(1.0, target + TUNING_MARGIN)
    start = EF_SEARCH_START if plan.index_type == "hnsw" else max(1, plan.nlist // 128)
    fixed = {RERANK_PARAMETER: K_FACTOR_TUNE} if plan.index_type == "ivfpq" else {}

    def attempt(value: int, **others) -> Tuning:
        params = {name: value, **fixed, **others, **_quantizer_params(plan, value)}
        set_search_params(index, params)
        recall = probe.recall(index)
        return Tuning(recall_at_10=recall, params=params, sample=len(probe.rows), reached=recall >= target)

    best = Tuning(recall_at_10=-1.0, sample=len(probe.rows), reached=False)
    missed = 0  # largest value known to miss the aim
    for value in _doublings(start, _largest(plan)):
        tried = attempt(value)
        if tried.recall_at_10 >= aim or tried.recall_at_10 > best.recall_at_10:
            best = tried
        if tried.recall_at_10 >= aim:
            break
        missed = value
    if best.recall_at_10 >= aim:  # bisect between the last miss and the first hit, twice
        for _ in range(2):
            middle = (missed + best.params[name]) // 2
            if middle <= missed:
                break
            tried = attempt(middle)
            if tried.recall_at_10 >= aim:
                best = tried
            else:
                missed = middle
    if fixed and best.recall_at_10 >= aim:  # ivfpq: re-rank as few candidates as still reach the aim
        factor = K_FACTOR_TUNE // 2
        while factor >= K_FACTOR_MIN:
            tried = attempt(best.params[name], **{RERANK_PARAMETER: factor})
            if tried.recall_at_10 < aim:
                break
            best, factor = tried, factor // 2
    set_search_params(index, best.params)
    return best


def _largest(plan: IndexPlan) -> int:
    return EF_SEARCH_MAX if plan.index_type == "hnsw" else plan.nlist


def _exhaustive(plan: IndexPlan) -> dict:
    """The setting that searches a tiny gallery (no held-out sample) as thoroughly as the type can."""
    params = {SEARCH_PARAMETER[plan.index_type]: _largest(plan)}
    if plan.index_type == "ivfpq":
        params[RERANK_PARAMETER] = K_FACTOR_TUNE
        params.update(_quantizer_params(plan, _largest(plan)))
    return params


def _quantizer_params(plan: IndexPlan, nprobe: int) -> dict:
    """An HNSW coarse quantizer must return nprobe good lists: its efSearch follows nprobe."""
    return {"quantizer_efSearch": QUANTIZER_EF_PER_PROBE * nprobe} if "_HNSW" in plan.factory else {}


def _doublings(start: int, stop: int) -> list[int]:
    values = []
    value = start
    while value < stop:
        values.append(value)
        value *= 2
    values.append(stop)
    return values


def write_index(index, path: str | os.PathLike) -> None:
    faiss = faiss_module()
    try:
        faiss.write_index(index, os.fspath(path))
    except RuntimeError as exc:
        raise UserError(f"cannot write {path}: {str(exc).splitlines()[-1][:160]}; free disk space or fix permissions") from exc


def read_index(path: str | os.PathLike, mmap: bool = False):
    """Read index.faiss, or CorruptArtifactError (never a crash) when it is damaged.

    `mmap` maps the file instead of reading it (`IO_FLAG_MMAP_IFC`): the inverted lists'
    codes and ids and the flat storage (ivfpq's re-ranking vectors) become read-only views of
    the page cache, so only the pages a query touches are read. The index must not be added
    to. (FAISS 1.15.1 refuses IO_FLAG_MMAP | IO_FLAG_MMAP_IFC; IO_FLAG_MMAP alone maps the
    lists as OnDiskInvertedLists but reads the flat storage — 4·d bytes a vector — into RAM.)
    """
    faiss = faiss_module()
    try:
        return faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except (RuntimeError, MemoryError, OverflowError) as exc:
        raise CorruptArtifactError(
            f"index file {path} is damaged or truncated ({str(exc).strip().splitlines()[-1][-120:]}); {REBUILD}"
        ) from exc
