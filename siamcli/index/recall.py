"""Recall tuning: recall@10 measured the way queries arrive, and the search setting that reaches it.

Recall is measured on vectors the index has not seen. An approximate build holds out a random
sample of up to 1,000 gallery vectors (a tenth of a small gallery), builds over the rest, and
compares its top 10 for each held-out vector with exact search over the same rest (a tie with
the 10th exact score counts as a hit). The search parameter (`efSearch` for HNSW, `nprobe` for
IVF) starts low and doubles until recall@10 on the sample reaches 0.96 — the target 0.95 plus a
margin of two standard errors of a 1,000-query estimate — then bisects back towards the smallest
value that still does; ivfpq then halves its re-ranking depth (k_factor_rf) while recall holds,
and an HNSW coarse quantizer searches 2·nprobe deep. The setting and the recall go into the
manifest. Why this protocol (and what measuring on indexed vectors got wrong): docs/scaling.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from siamcli.index import vectors as vector_file
from siamcli.index.faiss_io import set_search_params
from siamcli.index.plan import IndexPlan

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
EF_SEARCH_START, EF_SEARCH_MAX = 16, 4096


@dataclass
class Tuning:
    recall_at_10: float  # measured on `sample` held-out gallery vectors against exact search
    params: dict = field(default_factory=dict)  # {"efSearch": 64} | {"nprobe": 32} | {"nprobe": 32, "k_factor_rf": 4} | {}
    sample: int = 0  # queries the recall was measured on (0: exact index, recall 1 by construction)
    reached: bool = True  # recall_at_10 ≥ target


def holdout_size(count: int) -> int:
    return min(RECALL_QUERIES, count // 10) if count >= 20 else 0


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
    """Raise the search parameter until recall@10 ≥ target + margin, then bisect back (the module docstring)."""
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


def exhaustive_tuning(plan: IndexPlan) -> Tuning:
    """A gallery too small to hold vectors out is searched as thoroughly as the type can (recall 1)."""
    return Tuning(recall_at_10=1.0, params=_exhaustive(plan), sample=0)


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
