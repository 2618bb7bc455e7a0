"""FAISS index types, the `auto` rule, building from a vectors file, and measured recall@10.

Every index searches by inner product (`METRIC_INNER_PRODUCT`) over unit-length embeddings,
so the score is the cosine similarity. Row i of the index is row i of items.csv.

The `auto` rule (N = number of gallery images, d = embedding dim):

    N ≤ 50,000             Flat              exact; brute force costs ≲ 1 ms per query here
    50,000 < N ≤ 250,000   HNSW32,Flat       graph search; build ≈ 1 ms per vector on 2 cores
    N > 250,000            IVF{L},Flat       L = power of 2 nearest 4·√N (≤ N/39), trained on
                                             ≤ 64·L sampled vectors; builds in seconds where
                                             HNSW would take many minutes
    N·d·4 bytes > 8 GiB    IVF{L},SQ8        same lists, 8-bit codes: 4× less memory

PQ codes are not used: at recall@10 ≥ 0.95 they need a re-ranking stage over the raw vectors,
which costs the memory PQ was meant to save; SQ8 keeps recall above the target by itself.

Approximate types are then tuned: their search parameter (`efSearch` for HNSW, `nprobe` for
IVF) starts low and doubles until recall@10, measured against exact search on a sample of up
to 1,000 gallery vectors used as queries (each query's own row excluded, ties at the 10th
score count as hits), reaches 0.95. The parameter and the recall reached go into the
manifest. If `auto` cannot reach the target it builds Flat instead, so `auto` never answers
below 0.95; an explicitly requested type keeps its best setting and reports its recall.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.index import vectors as vector_file

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
FLAT_MAX = 50_000  # auto: exact search up to this many images
HNSW_MAX = 250_000  # auto: HNSW up to here, IVF past it
RAW_BYTES_BUDGET = 8 << 30  # auto: raw float32 vectors past this size are stored as SQ8 codes
HNSW_M = 32  # graph degree: the usual speed/recall sweet spot for d in 64…512
HNSW_EF_CONSTRUCTION = 40  # FAISS's default
TRAIN_POINTS_PER_LIST = 64  # k-means sample per inverted list (FAISS asks for 39…256)
MIN_POINTS_PER_LIST = 39  # FAISS warns below this
RECALL_TARGET = 0.95
RECALL_K = 10
RECALL_QUERIES = 1000
EXACT_CHUNK_ROWS = 8192  # exact search scores (queries × chunk) at a time: 32 MiB for 1,000 queries
SEARCH_PARAMETER = {"hnsw": "efSearch", "ivf": "nprobe"}
EF_SEARCH_MAX = 4096


def faiss_module():
    """Import FAISS (late: `siamcli --help` must not pay for it)."""
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat | hnsw | ivf (never auto: auto resolves to one of them)
    factory: str  # FAISS index_factory string
    chosen_by: str  # "auto" or "user"

    @property
    def approximate(self) -> bool:
        return self.index_type != "flat"

    @property
    def nlist(self) -> int:
        return int(self.factory.split(",")[0][len("IVF"):]) if self.index_type == "ivf" else 0


@dataclass
class Tuning:
    recall_at_10: float  # measured on `sample` gallery vectors against exact search
    params: dict = field(default_factory=dict)  # {"efSearch": 64} | {"nprobe": 32} | {}
    sample: int = 0  # queries the recall was measured on (0: exact index, recall 1 by construction)
    reached: bool = True  # recall_at_10 ≥ target


def nlist_for(count: int) -> int:
    """Inverted lists for N vectors: the power of 2 nearest 4·√N, with ≥ 39 training points each."""
    if count < 2 * MIN_POINTS_PER_LIST:
        return 1
    target = 4 * math.sqrt(count)
    power = 2 ** round(math.log2(target))
    while power > 1 and power * MIN_POINTS_PER_LIST > count:
        power //= 2
    return max(1, power)


def plan_index(index_type: str, count: int, dim: int) -> IndexPlan:
    """Resolve --index-type (auto|flat|hnsw|ivf) for a gallery of `count` vectors (module rule)."""
    if index_type not in INDEX_TYPES:
        raise UserError(f"--index-type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    chosen_by = "user"
    if index_type == "auto":
        chosen_by = "auto"
        index_type = "flat" if count <= FLAT_MAX else "hnsw" if count <= HNSW_MAX else "ivf"
    if index_type == "flat":
        return IndexPlan("flat", "Flat", chosen_by)
    if index_type == "hnsw":
        return IndexPlan("hnsw", f"HNSW{HNSW_M},Flat", chosen_by)
    codes = "SQ8" if count * dim * 4 > RAW_BYTES_BUDGET else "Flat"
    return IndexPlan("ivf", f"IVF{nlist_for(count)},{codes}", chosen_by)


def build_from_file(
    vectors_path: str | os.PathLike, plan: IndexPlan, seed: int = 0, on_stage: Callable[[str], None] | None = None
):
    """A trained FAISS index holding every row of the vectors file, added chunk by chunk."""
    faiss = faiss_module()
    (count, dim), _ = vector_file.read_shape(vectors_path)
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.index_type == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        if on_stage:
            on_stage(f"training {plan.factory}")
        rng = np.random.default_rng(seed)
        size = min(count, TRAIN_POINTS_PER_LIST * max(plan.nlist, 1))
        rows = np.sort(rng.choice(count, size=size, replace=False))
        index.train(vector_file.read_rows(vectors_path, rows))
    add_from_file(index, vectors_path, 0, on_stage, plan.factory)
    return index


def add_from_file(index, vectors_path, start_row: int = 0, on_stage: Callable[[str], None] | None = None, factory: str = ""):
    """Add the file's rows from `start_row` on (rows before it are already in `index`)."""
    if on_stage:
        on_stage(f"adding vectors to {factory or 'the index'}")
    for first, chunk in vector_file.iter_chunks(vectors_path):
        if first + len(chunk) <= start_row:
            continue
        index.add(chunk[max(0, start_row - first):])
    return index


def set_search_params(index, params: dict) -> None:
    """Apply {"efSearch": n} / {"nprobe": n} to a loaded index (no-op for {})."""
    if not params:
        return
    faiss = faiss_module()
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as exc:
            raise CorruptArtifactError(f"search parameter {name}={value} does not apply to this index; rebuild it with --force") from exc


def exact_neighbours(vectors_path, queries: np.ndarray, k: int, exclude_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over the whole file: (scores (m, k), rows (m, k)), best first.

    `exclude_rows[i]` (a row of the file, or -1) is left out of query i's answer. Memory is
    one (m × 8192) score block, however big the file.
    """
    m = len(queries)
    best_scores = np.full((m, k), -np.inf, np.float32)
    best_rows = np.full((m, k), -1, np.int64)
    for first, chunk in vector_file.iter_chunks(vectors_path, EXACT_CHUNK_ROWS):
        scores = queries @ chunk.T  # (m, rows)
        if exclude_rows is not None:
            inside = (exclude_rows >= first) & (exclude_rows < first + len(chunk))
            scores[np.flatnonzero(inside), exclude_rows[inside] - first] = -np.inf
        if scores.shape[1] > k:  # keep the chunk's k best before the exact merge
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(scores, top, axis=1)
            rows = top + first
        else:
            rows = np.broadcast_to(np.arange(first, first + len(chunk)), scores.shape)
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
        # Best k by score, ties broken by the lower row (stable, like FAISS's flat search).
        order = np.lexsort((all_rows, -all_scores), axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_rows = np.take_along_axis(all_rows, order, axis=1)
    return best_scores, best_rows


def recall_sample(count: int, seed: int = 0, size: int = RECALL_QUERIES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(count, size), replace=False))


class RecallProbe:
    """Recall@10 of an index on gallery vectors used as queries, against exact search.

    The exact answers are computed once (one pass over the file), so trying several search
    parameters only costs the approximate searches.
    """

    def __init__(self, vectors_path, seed: int = 0, size: int = RECALL_QUERIES):
        (count, _), _ = vector_file.read_shape(vectors_path)
        self.vectors_path = vectors_path
        self.rows = recall_sample(count, seed, size)
        self.k = min(RECALL_K, count - 1)
        self.queries = vector_file.read_rows(vectors_path, self.rows)
        if self.k > 0:
            self.exact_scores, self.exact_rows = exact_neighbours(vectors_path, self.queries, self.k, self.rows)

    def recall(self, index) -> float:
        if self.k <= 0:
            return 1.0
        _, found = index.search(self.queries, self.k + 1)
        hits = 0
        unique = np.unique(found[found >= 0])
        true_scores = dict(zip(unique.tolist(), (vector_file.read_rows(self.vectors_path, unique) @ self.queries.T).tolist()))
        for i, own in enumerate(self.rows):
            answer = [row for row in found[i] if row >= 0 and row != own][: self.k]
            exact = set(self.exact_rows[i].tolist())
            kth = self.exact_scores[i, -1]
            for row in answer:
                # A tie with the k-th exact score is as good an answer as the one exact search kept.
                if row in exact or true_scores[row][i] >= kth - 1e-6:
                    hits += 1
        return hits / (len(self.rows) * self.k)


def tune(index, plan: IndexPlan, vectors_path, target: float = RECALL_TARGET, seed: int = 0,
         on_stage: Callable[[str], None] | None = None) -> Tuning:
    """Raise the search parameter until recall@10 ≥ target (see the module docstring)."""
    if not plan.approximate:
        return Tuning(recall_at_10=1.0, params={}, sample=0, reached=True)
    if on_stage:
        on_stage("measuring recall@10 against exact search")
    probe = RecallProbe(vectors_path, seed)
    name = SEARCH_PARAMETER[plan.index_type]
    if plan.index_type == "hnsw":
        values = _doublings(16, EF_SEARCH_MAX)
    else:
        values = _doublings(max(1, plan.nlist // 128), plan.nlist)
    best = Tuning(recall_at_10=-1.0, sample=len(probe.rows), reached=False)
    for value in values:
        set_search_params(index, {name: value})
        recall = probe.recall(index)
        if recall > best.recall_at_10:
            best = Tuning(recall_at_10=recall, params={name: value}, sample=len(probe.rows), reached=recall >= target)
        if recall >= target:
            break
    set_search_params(index, best.params)
    return best


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


def read_index(path: str | os.PathLike):
    """Read index.faiss, or CorruptArtifactError (never a crash) when it is damaged."""
    faiss = faiss_module()
    try:
        return faiss.read_index(os.fspath(path))
    except (RuntimeError, MemoryError, OverflowError) as exc:
        raise CorruptArtifactError(
            f"index file {path} is damaged or truncated ({str(exc).strip().splitlines()[-1][-120:]}); "
            "rebuild it with `siamcli index GALLERY --force`"
        ) from exc


def index_memory_bytes(index) -> int:
    """Bytes the index takes when serialised (≈ its memory footprint)."""
    faiss = faiss_module()
    return int(faiss.serialize_index(index).nbytes)
