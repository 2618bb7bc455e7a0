"""The k-nearest-neighbour graph clustering works on: each image joined to its k most similar others.

Memory is O(N·k), never N×N. Up to EXACT_MAX vectors the search is exact: FAISS IndexFlatIP,
every vector against all, a chunk of queries at a time. Above, an IVF self-join:

  * the coarse quantizer of an `IVF{L},Flat` index (FAISS k-means, spherical, L =
    faiss_index.nlist_for(N): ≈ 4·√N lists, trained on TRAIN_POINTS_PER_LIST points a list)
    gives every vector its MAX_LISTS nearest lists;
  * each vector is a query in its nearest list only and a candidate in its m nearest, so a list's
    queries are compared with its candidates in one brute-force block (faiss.knn: BLAS), k + 1
    kept per query;
  * m is the smallest number of lists that finds RECALL_TARGET of the exact top-k neighbours
    above the threshold of RECALL_SAMPLE sampled vectors (the edges the clustering keeps; the
    neighbours below it are noise whatever their rank). Whether a neighbour j of query i is a
    candidate depends only on whether i's list is among j's m nearest, so every m is measured
    from one exact search of the sample, before any join runs.

Why not FAISS's own IVF search (each query probing its nprobe lists)? Measured on the same
lists, synthetic clustered vectors, 256-d, k = 8 (`benchmarks/bench_cluster.py join`; CPU seconds
with training and assignment or adding; recall of the above-threshold neighbours):

    N = 10^5, IVF1024   self-join  m = 4: 9.0 s, 0.963   m = 16: 18.3 s, 0.982
                        search     nprobe 4: 7.9 s, 0.957   nprobe 16: 13.5 s, 0.980
    N = 10^6, IVF4096   self-join  m = 4: 165 s, 0.783   m = 16: 246 s, 0.867
                        search     nprobe 4: 188 s, 0.776   nprobe 16: 364 s, 0.863

At 10^5 the search is a little cheaper (13.5 s against 18.3 s at recall 0.98); at 10^6, where the
time matters, the self-join is 1.5× cheaper (246 s against 364 s at 0.87): a list's queries share
their candidates, so each list is one matrix product instead of a scan per query. At 10^6 these
vectors (small isotropic clusters, the hardest case for a partition) stop at recall 0.87 with 16
lists; the clusters still match the generating ones at ARI 0.996 (docs/cluster.md).

The graph is symmetric (a pair is an edge when either image is among the other's k nearest) and
holds cosine similarities, exact for the pairs found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from siamcli.events import NO_EVENTS, Events
from siamcli.index import faiss_index

EXACT_MAX = 20_000  # exact all-pairs search up to this many vectors (N² dot products: seconds at 20,000)
SEARCH_CHUNK = 8192  # exact search: queries per FAISS call, (chunk, k+1) answers at a time
RECALL_TARGET = 0.99  # not the index's 0.95: a group whose vectors fall into two lists is held together only by
                      # the edges between them; at 0.95 (one list per vector) 4 of 40 groups of 50 split in two
RECALL_SAMPLE = 1000
TRAIN_POINTS_PER_LIST = 39  # FAISS's minimum: k-means is a large share of the build at 10^6
MAX_LISTS = 16  # the most lists a vector is a candidate in


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
        factory, params, recall = faiss_index.FLAT.factory, {}, 1.0
        found, scores = _exact_neighbours(vectors, k, events)
    else:
        lists = faiss_index.nlist_for(count)
        factory = f"IVF{lists},Flat self-join"
        found, scores, params, recall = _ivf_self_join(vectors, k, threshold, lists, events, seed)
    keep = _without_self(found, np.arange(count)[:, None])
    rows = np.broadcast_to(np.arange(count, dtype=np.int32)[:, None], found.shape)[keep]
    graph = sparse.coo_array((scores[keep], (rows, found[keep].astype(np.int32))), shape=(count, count)).tocsr()
    del found, scores, keep, rows
    graph = graph.maximum(graph.T).tocsr()  # one image among the other's k nearest: an edge both ways
    graph.sort_indices()
    return KnnGraph(graph, k, factory, params, recall)


def _exact_neighbours(vectors: np.ndarray, k: int, events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(found, scores), each (N, k+1): every row's k+1 most similar rows (itself among them), exactly."""
    index = faiss_index.create(faiss_index.FLAT, vectors.shape[1])
    index.add(vectors)
    events.stage("finding each image's nearest neighbours", len(vectors))
    found = np.empty((len(vectors), k + 1), np.int64)
    scores = np.empty((len(vectors), k + 1), np.float32)
    for start in range(0, len(vectors), SEARCH_CHUNK):
        part = slice(start, start + SEARCH_CHUNK)
        scores[part], found[part] = index.search(vectors[part], k + 1)
        events.advance(len(found[part]))
    return found, scores


def _ivf_self_join(vectors: np.ndarray, k: int, threshold: float, lists: int, events: Events,
                   seed: int) -> tuple[np.ndarray, np.ndarray, dict, float]:
    """(found, scores, {"lists_per_vector": m}, recall): the IVF self-join (module docstring)."""
    faiss = faiss_index.faiss_module()
    count = len(vectors)
    events.stage(f"training IVF{lists} on {min(count, TRAIN_POINTS_PER_LIST * lists)} vectors")
    rng = np.random.default_rng(seed)
    ivf = faiss_index.create(faiss_index.IndexPlan("ivf", f"IVF{lists},Flat", "auto"), vectors.shape[1])
    ivf.train(vectors[np.sort(rng.choice(count, size=min(count, TRAIN_POINTS_PER_LIST * lists), replace=False))])
    quantizer = faiss.downcast_index(ivf.quantizer)
    events.stage(f"assigning {count} vectors to their nearest lists", count)
    nearest = np.empty((count, min(MAX_LISTS, lists)), np.int32)
    for start in range(0, count, SEARCH_CHUNK):
        nearest[start:start + SEARCH_CHUNK] = quantizer.search(vectors[start:start + SEARCH_CHUNK], nearest.shape[1])[1]
        events.advance(min(SEARCH_CHUNK, count - start))
    per_vector, recall = _lists_per_vector(vectors, nearest, k, threshold, rng)
    return *_join(vectors, nearest, per_vector, lists, k, events), {"lists_per_vector": per_vector}, recall


def _lists_per_vector(vectors: np.ndarray, nearest: np.ndarray, k: int, threshold: float,
                      rng: np.random.Generator) -> tuple[int, float]:
    """(m, recall at m): the fewest lists per candidate that find RECALL_TARGET of the sampled
    rows' exact above-threshold neighbours (the most lists when none does)."""
    faiss = faiss_index.faiss_module()
    rows = np.sort(rng.choice(len(vectors), size=min(RECALL_SAMPLE, len(vectors)), replace=False))
    scores, exact = faiss.knn(vectors[rows], vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    wanted = (scores >= threshold) & (exact != rows[:, None])
    if not wanted.any():
        return 1, 1.0
    query_list = np.broadcast_to(nearest[rows, :1], exact.shape)[wanted]  # the list i is a query in …
    candidate_lists = nearest[exact[wanted]]  # … among neighbour j's nearest lists, at which rank?
    hit = candidate_lists == query_list[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), nearest.shape[1])
    recalls = [(rank < m).mean() for m in range(1, nearest.shape[1] + 1)]
    m = next((m for m, recall in enumerate(recalls, start=1) if recall >= RECALL_TARGET), len(recalls))
    return m, float(recalls[m - 1])


def _join(vectors: np.ndarray, nearest: np.ndarray, per_vector: int, lists: int, k: int,
          events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(found, scores), each (N, k+1), padded with -1: each vector's best among its list's candidates."""
    faiss = faiss_index.faiss_module()
    queries = _members(nearest[:, 0], np.arange(len(vectors)), lists)
    candidate_of = np.repeat(np.arange(len(vectors), dtype=np.int64), per_vector)
    candidates = _members(nearest[:, :per_vector].reshape(-1), candidate_of, lists)
    del candidate_of
    found = np.full((len(vectors), k + 1), -1, np.int64)
    scores = np.full((len(vectors), k + 1), -np.inf, np.float32)
    events.stage("finding each image's nearest neighbours", len(vectors))
    for members, pool in zip(queries, candidates):
        if not len(members):
            continue
        depth = min(k + 1, len(pool))
        block_scores, block_found = faiss.knn(vectors[members], vectors[pool], depth, metric=faiss.METRIC_INNER_PRODUCT)
        found[members, :depth] = pool[block_found]
        scores[members, :depth] = block_scores
        events.advance(len(members))
    return found, scores


def _members(assigned: np.ndarray, owners: np.ndarray, lists: int) -> list[np.ndarray]:
    """Per list, the owners assigned to it (a stable sort: each list's owners in row order)."""
    order = np.argsort(assigned, kind="stable")
    bounds = np.searchsorted(assigned[order], np.arange(lists + 1))
    sorted_owners = owners[order]
    return [sorted_owners[bounds[i]:bounds[i + 1]] for i in range(lists)]


def _without_self(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(m, k+1) bool: the k answers of each row that are not the row itself nor missing (-1).

    A row is usually its own first answer; when exact duplicates tie with it, it may be absent,
    and then its last answer goes instead."""
    keep = (found != own) & (found >= 0)
    extra = keep.sum(axis=1) > found.shape[1] - 1
    keep[extra, -1] = False
    return keep
