"""The k-nearest-neighbour graph clustering works on: each image joined to its k most similar others.

Memory is O(N·k), never N×N: FAISS searches every vector against the others a chunk of
queries at a time and keeps k answers per row. Up to EXACT_MAX vectors the search is exact
(IndexFlatIP: brute force, BLAS); above, an IVF index (`IVF{L},Flat`: exact scores of the
candidates it finds, L = faiss_index.nlist_for(N) / 2 lists, trained on TRAIN_POINTS_PER_LIST
points a list) with nprobe raised from 1 until, on RECALL_SAMPLE sampled rows, the search finds
RECALL_TARGET of the exact top-k neighbours that are above the threshold — the edges the
clustering keeps; the neighbours below it are noise whatever their rank, and finding them
exactly would cost most of the search. The graph is symmetric (a pair is an edge when either
image is among the other's k nearest) and holds cosine similarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from siamcli.events import NO_EVENTS, Events
from siamcli.index import faiss_index

EXACT_MAX = 20_000  # exact all-pairs search up to this many vectors (N² dot products: ≈ 10 s on 2 cores at 20,000)
SEARCH_CHUNK = 8192  # queries per FAISS call: (chunk, k+1) answers at a time
RECALL_TARGET = faiss_index.RECALL_TARGET
RECALL_SAMPLE = 1000
TRAIN_POINTS_PER_LIST = 39  # FAISS's minimum: k-means is most of an IVF build's time at 10^6
TIE = 1e-6  # a neighbour as similar as the k-th exact one is as good an answer


@dataclass
class KnnGraph:
    similarity: sparse.csr_array  # (N, N), symmetric, no diagonal: the k-NN pairs and their cosine similarity
    k: int  # neighbours searched per row
    factory: str  # the FAISS index that found them: "Flat" (exact) or "IVF{L},Flat"
    search_params: dict  # {"nprobe": n} for IVF
    recall: float  # share of the exact above-threshold neighbours found (1.0 when exact)

    @property
    def count(self) -> int:
        return self.similarity.shape[0]

    def above(self, threshold: float) -> sparse.csr_array:
        """The edges with similarity ≥ threshold (the graph the clustering keeps)."""
        graph = self.similarity.copy()
        graph.data[graph.data < threshold] = 0
        graph.eliminate_zeros()
        return graph


def knn_graph(vectors: np.ndarray, k: int, threshold: float, events: Events = NO_EVENTS, seed: int = 0) -> KnnGraph:
    """The k-NN graph of (N, d) unit vectors (module docstring)."""
    count = len(vectors)
    k = min(k, count - 1)
    if k < 1:
        return KnnGraph(sparse.csr_array((count, count), dtype=np.float32), max(k, 0), "Flat", {}, 1.0)
    vectors = np.ascontiguousarray(vectors, np.float32)
    if count <= EXACT_MAX:
        plan, params, recall = faiss_index.FLAT, {}, 1.0
        index = faiss_index.create(plan, vectors.shape[1])
        index.add(vectors)
    else:
        plan = faiss_index.IndexPlan("ivf", f"IVF{max(1, faiss_index.nlist_for(count) // 2)},Flat", "auto")
        index = _trained_ivf(plan, vectors, events, seed)
        params, recall = _tune_nprobe(index, plan, vectors, k, threshold, events, seed)
    rows, columns, scores = _search_all(index, vectors, k, events)
    del index
    graph = sparse.coo_array((scores, (rows, columns)), shape=(count, count)).tocsr()
    del rows, columns, scores
    graph = graph.maximum(graph.T).tocsr()  # one image among the other's k nearest: an edge both ways
    graph.sort_indices()
    return KnnGraph(graph, k, plan.factory, params, recall)


def _trained_ivf(plan: faiss_index.IndexPlan, vectors: np.ndarray, events: Events, seed: int):
    events.stage(f"training {plan.factory} on {len(vectors)} vectors")
    index = faiss_index.create(plan, vectors.shape[1])
    rng = np.random.default_rng(seed)
    size = min(len(vectors), TRAIN_POINTS_PER_LIST * plan.nlist)
    index.train(vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))])
    index.add(vectors)
    return index


def _tune_nprobe(index, plan: faiss_index.IndexPlan, vectors: np.ndarray, k: int, threshold: float, events: Events,
                 seed: int) -> tuple[dict, float]:
    """({"nprobe": n}, recall): the smallest power of 2 whose search finds RECALL_TARGET of the
    sampled rows' exact neighbours above the threshold (all lists if none does)."""
    events.stage("measuring the recall of the neighbour search on sampled rows")
    faiss = faiss_index.faiss_module()
    rows = np.sort(np.random.default_rng(seed + 1).choice(len(vectors), size=min(RECALL_SAMPLE, len(vectors)), replace=False))
    exact_scores, exact_rows = faiss.knn(vectors[rows], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    wanted = (exact_scores >= threshold) & (exact_rows != rows[:, None])
    nprobe, recall = 1, 1.0
    while True:
        faiss_index.set_search_params(index, {"nprobe": nprobe})
        if not wanted.any():
            break
        scores, found = index.search(vectors[rows], k + 1)
        recall = sum(len(set(exact_rows[i][wanted[i]]) & set(found[i])) for i in range(len(rows))) / int(wanted.sum())
        if recall >= RECALL_TARGET or nprobe >= plan.nlist:
            break
        nprobe = min(plan.nlist, nprobe * 2)
    return {"nprobe": nprobe}, recall


def _search_all(index, vectors: np.ndarray, k: int, events: Events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, similarities) of every row's k nearest other rows, as flat int32/float32 arrays."""
    count = len(vectors)
    events.stage("finding each image's nearest neighbours", count)
    rows = np.empty(count * k, np.int32)
    columns = np.empty(count * k, np.int32)
    scores = np.empty(count * k, np.float32)
    filled = 0
    for start in range(0, count, SEARCH_CHUNK):
        chunk_scores, found = index.search(vectors[start:start + SEARCH_CHUNK], k + 1)
        own = np.arange(start, start + len(found))[:, None]
        keep = _without_self(found, own)
        taken = int(keep.sum())
        rows[filled:filled + taken] = np.broadcast_to(own, found.shape)[keep]
        columns[filled:filled + taken] = found[keep]
        scores[filled:filled + taken] = chunk_scores[keep]
        filled += taken
        events.advance(len(found))
    return rows[:filled], columns[:filled], scores[:filled]


def _without_self(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(m, k+1) bool: the k answers of each row that are not the row itself nor missing (-1).

    A row is usually its own first answer; when exact duplicates tie with it, it may be absent,
    and then its last answer goes instead."""
    keep = (found != own) & (found >= 0)
    extra = keep.sum(axis=1) > found.shape[1] - 1
    keep[extra, -1] = False
    return keep
