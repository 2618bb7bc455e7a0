"""Graph clusterings: the k-NN graph (graph.py) and a threshold in, one label per image out.

    components        connected components of the edges ≥ threshold (scipy.sparse.csgraph):
                      single linkage. One wrong edge joins two people; the chaining reference.
    chinese-whispers  Chinese Whispers (Biemann 2006, dlib's face clustering): every image starts
                      in a cluster of its own, then, visiting the images in random order, each
                      takes the label with the largest summed similarity among its neighbours
                      ≥ threshold, until no label changes. One bad edge is outvoted by a node's
                      other neighbours. Hand-written (on scipy.sparse): neither scipy nor
                      scikit-learn has it, and dlib / networkx are not dependencies.
    average           average linkage on the graph of edges ≥ threshold, a pair without an edge
                      counting as similarity 0, cut where the best average falls below the
                      threshold: two groups joined by one edge average far below it. Hand-written
                      (on scipy.sparse): scikit-learn's AgglomerativeClustering takes a sparse
                      connectivity graph but averages over the pairs it holds only, so one bad
                      edge between two groups is their whole linkage: on unseen ORL faces it
                      chained as connected components do (ARI 0.000 at k = 8 and 10, docs/cluster.md);
                      scipy's linkage needs the N×N distances.

Which one is the default was measured on unseen identities: docs/cluster.md.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from siamcli.cluster.graph import KnnGraph
from siamcli.cluster.options import ClusterMethod
from siamcli.events import NO_EVENTS, Events

WHISPER_ROUNDS = 50  # Chinese Whispers stops earlier when a round changes no label (≈ 10–20 rounds)
WHISPER_BATCHES = 16  # a round updates the nodes in this many random batches: near the sequential
                      # algorithm (all at once, neighbours swap labels back and forth forever)


def cluster_labels(graph: KnnGraph, threshold: float, method: str, seed: int = 0, events: Events = NO_EVENTS) -> np.ndarray:
    """(N,) int64 labels: images with the same label are one cluster (arbitrary numbering)."""
    ClusterMethod.check(method, "--method")
    edges = graph.above(threshold)
    if method == ClusterMethod.COMPONENTS:
        return connected_components(edges)
    if method == ClusterMethod.CHINESE_WHISPERS:
        return chinese_whispers(edges, seed, events)
    return average_linkage(edges, threshold, events)


def connected_components(edges: sparse.csr_array) -> np.ndarray:
    return csgraph.connected_components(edges, directed=False)[1].astype(np.int64)


def chinese_whispers(edges: sparse.csr_array, seed: int = 0, events: Events = NO_EVENTS) -> np.ndarray:
    """Chinese Whispers on a symmetric graph of positive weights (module docstring)."""
    count = edges.shape[0]
    labels = np.arange(count, dtype=np.int64)
    nodes = np.flatnonzero(np.diff(edges.indptr) > 0)  # an image without edges keeps its own label
    rng = np.random.default_rng(seed)
    events.stage("Chinese Whispers", WHISPER_ROUNDS)
    for _ in range(WHISPER_ROUNDS):
        changed = 0
        for batch in np.array_split(rng.permutation(nodes), min(WHISPER_BATCHES, max(1, len(nodes)))):
            heaviest = _heaviest_labels(edges, batch, labels)
            changed += int((heaviest != labels[batch]).sum())
            labels[batch] = heaviest
        events.advance(1, f"{changed} labels changed")
        if not changed:
            break
    return labels


def _heaviest_labels(edges: sparse.csr_array, nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each node, the label whose neighbours' weights sum highest (ties: the smallest label)."""
    rows = edges[nodes]
    counts = np.diff(rows.indptr)
    votes = sparse.coo_array((rows.data, (np.repeat(np.arange(len(nodes)), counts), labels[rows.indices])),
                             shape=(len(nodes), len(labels))).tocsr()  # duplicate (node, label) entries are summed
    return np.asarray(votes.argmax(axis=1)).reshape(-1).astype(np.int64)


def average_linkage(edges: sparse.csr_array, threshold: float, events: Events = NO_EVENTS) -> np.ndarray:
    """Average linkage on the graph, where a pair without an edge has similarity 0, cut at `threshold`.

    Average linkage is reducible (the linkage of A∪B to C is a weighted mean of A's and B's), so
    merging every pair of clusters that are each other's most similar neighbour, all at once, gives
    the same merges as merging the single best pair at a time. Each round does that with sparse
    products: W (the summed similarities between clusters) becomes MᵀWM, M mapping clusters to
    merged ones; the average of two clusters is W / (size·size). Rounds end when no pair averages
    ≥ threshold.
    """
    labels = np.arange(edges.shape[0], dtype=np.int64)
    sums = sparse.csr_array(edges, dtype=np.float64)
    sizes = np.ones(edges.shape[0])
    events.stage("average linkage")
    while True:
        merged = _mutual_best(sums, sizes, threshold)
        if merged is None:
            return labels
        mapping = sparse.csr_array((np.ones(len(merged)), (np.arange(len(merged)), merged)), shape=(len(merged), int(merged.max()) + 1))
        sums = (mapping.T @ sums @ mapping).tocsr()
        sums.setdiag(0)  # the sum within a cluster is no linkage
        sums.eliminate_zeros()
        sizes = np.bincount(merged, weights=sizes)
        labels = merged[labels]
        events.advance(1, f"{len(sizes)} clusters")


def _mutual_best(sums: sparse.csr_array, sizes: np.ndarray, threshold: float) -> np.ndarray | None:
    """cluster → merged cluster (0 … C'-1) joining every mutual best pair averaging ≥ threshold; None if none."""
    pairs = sums.tocoo()
    average = pairs.data / (sizes[pairs.row] * sizes[pairs.col])
    close = average >= threshold
    if not close.any():
        return None
    rows, columns, average = pairs.row[close], pairs.col[close], average[close]
    order = np.lexsort((columns, -average, rows))  # per row, the best first (ties: the smaller cluster number)
    rows, columns = rows[order], columns[order]
    first = np.concatenate([[True], rows[1:] != rows[:-1]])
    best = np.full(len(sizes), -1, np.int64)
    best[rows[first]] = columns[first]
    candidates = np.flatnonzero(best >= 0)
    mutual = candidates[(best[best[candidates]] == candidates) & (candidates < best[candidates])]
    target = np.arange(len(sizes))
    target[best[mutual]] = mutual
    return np.unique(target, return_inverse=True)[1].reshape(-1)
