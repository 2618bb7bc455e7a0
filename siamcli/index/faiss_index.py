"""Building a FAISS index from a vectors file: create, add every row, tune (recall.py), hand back.

Every index searches by inner product (`METRIC_INNER_PRODUCT`) over unit-length embeddings,
so the score is the cosine similarity. The id FAISS returns is the row in the segment: Flat and
ivfpq number rows by position (rows are added in order); HNSW (wrapped in `IDMap`) and IVF are
given the row numbers explicitly, so rows can be added in any order.

ivfpq keeps every row's 8-bit vector in row order (no IDMap: ids are positions): they re-rank
the PQ candidates and are also the gallery's only stored copy, read back by `reconstruct_rows`
(a mapped file too). Its build puts every row into the 8-bit storage and all but the held-out
rows into the IVF lists, with their row numbers, so tuning sees an index without the held-out
rows; they join the lists after it. Updates add rows in order (`add_rows`, start_row = ntotal).

The package's other FAISS modules: plan.py (which index, no FAISS), recall.py (measuring and
tuning recall@10), faiss_io.py (index files, search parameters). The measurements behind the
choices: docs/scaling.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from siamcli.index import vectors as vector_file
from siamcli.index.faiss_io import faiss_module, read_index, set_search_params, write_index  # noqa: F401 (callers below)
from siamcli.index.plan import (  # noqa: F401 (callers below)
    FLAT,
    FLAT_MAX,
    MEMORY_BUDGET,
    IndexPlan,
    keeps_vectors,
    nlist_for,
    plan_index,
    pq_subquantizers,
)
from siamcli.index.recall import (  # noqa: F401 (callers below)
    RECALL_K,
    RECALL_TARGET,
    TUNING_MARGIN,
    RecallProbe,
    Tuning,
    exact_neighbours,
    exhaustive_tuning,
    holdout_size,
    tune,
)

# The names imported above and not used here are for the callers that still import them from this
# module (cluster/graph.py, serve/searcher.py, search.py's query, benchmarks/): their homes are
# plan.py, recall.py and faiss_io.py.

HNSW_EF_CONSTRUCTION = 40  # FAISS's default
TRAIN_POINTS_PER_LIST = 64  # k-means sample per inverted list (FAISS asks for 39…256)
SQ_RANGE_MARGIN = 0.05  # ivfpq: each dimension's 8-bit range is the training sample's min…max widened by 5% of it
                        # on both sides, so rows added later (or missed by the sample) are rarely clipped:
                        # 1e6 × 256 data, 262 k sample, 100 k other rows: clipped rows 48 → 2, worst top-10
                        # score error 0.0035 → 0.0022, mean per-dimension error 0.00048 → 0.00053
PQ_TRAIN_MIN = 256 * 39  # 8-bit codebooks: 256 centroids × FAISS's 39 points each


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
        tuning = exhaustive_tuning(plan)
        set_search_params(index, tuning.params)
    return index, tuning
