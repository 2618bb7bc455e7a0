"""Retrieval metrics, leave-one-out over the evaluated set (definitions: docs/evaluate.md).

Every image ranks all *other* images by distance. An image whose identity has at least one other
image is a query; R is the number of those other images. Images alone in their identity are not
queries but stay in the gallery (they can still be someone's wrong neighbour).

    precision_at_1  share of queries whose nearest other image has the same identity
    recall_at_k     share of queries with a same-identity image among the k nearest
    r_precision     mean over queries of (same-identity images among the R nearest) / R
    map_at_r        mean over queries of (1/R) · Σ_{i≤R} P(i)·rel(i)

Distance is the squared Euclidean distance (for unit vectors, 2 − 2·cosine), computed in float64
from the float32 vectors and rounded to float32. Ties are broken by position: of two images at
the same distance, the one earlier in the input ranks first. The query itself is excluded by
position, so an exact duplicate of it is still a neighbour at distance 0. Results do not depend
on the block size, on threads, or on the order FAISS happens to return equal distances in.

How: FAISS's exact index (IndexFlatL2, on mean-centred vectors, which changes no distance but
shrinks float32 rounding) returns, for a block of queries, a candidate list a little longer than
needed; the candidates' distances are recomputed exactly and re-ranked. A query whose k-th
distance comes within FAISS's rounding bound of its last candidate (an image outside the list
could tie or beat it) is searched again with a list four times as long. Memory is bounded by
`memory_bytes` per block plus the index itself (n × d float32); no n × n matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from siamcli.jsonio import json_float

DEFAULT_BLOCK_SIZE = 1024  # queries per FAISS search
DEFAULT_MEMORY_BYTES = 256 << 20  # working memory for one block of neighbour lists
_UNIT_ROUNDOFF = 2.0**-24  # float32
_BYTES_PER_ENTRY = 48  # FAISS distances + ids, exact distances, sort keys, per (query, candidate)


@dataclass(frozen=True)
class RetrievalMetrics:
    precision_at_1: float
    recall_at_k: dict[int, float] = field(default_factory=dict)  # k → share of queries
    r_precision: float = 0.0
    map_at_r: float = 0.0
    queries: int = 0  # images whose identity has another image

    def to_json(self) -> dict:
        """The documented keys (docs/evaluate.md); recall_at_k keyed by k as a string ({"1": …, "5": …}); NaN → null."""
        return {
            "precision_at_1": json_float(self.precision_at_1),
            "recall_at_k": {str(k): json_float(v) for k, v in sorted(self.recall_at_k.items())},
            "r_precision": json_float(self.r_precision),
            "map_at_r": json_float(self.map_at_r),
        }


@dataclass(frozen=True)
class RetrievalResult:
    """The metrics and what each image's search found (arrays over all n images, in input order)."""

    metrics: RetrievalMetrics
    is_query: np.ndarray  # (n,) bool: its identity has another image
    relevant_count: np.ndarray  # (n,) int64: R, other images with its identity
    nearest: np.ndarray  # (n,) int64: nearest other image; -1 for non-queries
    nearest_distance: np.ndarray  # (n,) float32; nan for non-queries
    average_precision: np.ndarray  # (n,) float64: AP@R; nan for non-queries
    r_precision: np.ndarray  # (n,) float64; nan for non-queries


def retrieval_metrics(
    embeddings: np.ndarray,
    labels,
    ks=(1, 5, 10),
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> RetrievalMetrics:
    """Leave-one-out retrieval metrics of `embeddings` (n, d) under identity `labels` (n,)."""
    return evaluate_retrieval(embeddings, labels, ks, block_size=block_size, memory_bytes=memory_bytes).metrics


def evaluate_retrieval(
    embeddings: np.ndarray,
    labels,
    ks=(1, 5, 10),
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> RetrievalResult:
    """Metrics plus, per image, its nearest neighbour and AP@R (for classification and pictures).

    k values larger than the gallery count the whole gallery (recall 1).
    """
    vectors = _as_vectors(embeddings)
    codes, counts = _encode(labels, len(vectors))
    ks = _check_ks(ks)
    n = len(vectors)
    relevant_count = (counts[codes] - 1).astype(np.int64)
    is_query = relevant_count > 0
    nearest = np.full(n, -1, np.int64)
    nearest_distance = np.full(n, np.nan, np.float32)
    average_precision = np.full(n, np.nan)
    r_precision = np.full(n, np.nan)
    hits = {k: np.zeros(n, bool) for k in ks}
    rows = np.flatnonzero(is_query)
    if len(rows) == 0:
        nan = float("nan")
        metrics = RetrievalMetrics(nan, {k: nan for k in ks}, nan, nan, 0)
        return RetrievalResult(metrics, is_query, relevant_count, nearest, nearest_distance,
                               average_precision, r_precision)

    # Each query needs its R nearest (MAP@R, R-precision) and its max(ks) nearest (recall@k).
    depth = np.minimum(np.maximum(relevant_count[rows], max(ks)), n - 1)
    searcher = ExactNeighbours(vectors, memory_bytes=memory_bytes)
    for block, distances, neighbours in searcher.blocks(rows, depth, block_size):
        relevant = codes[neighbours] == codes[block][:, None]  # (b, K) bool
        r = relevant_count[block]
        nearest[block] = neighbours[:, 0]
        nearest_distance[block] = distances[:, 0]
        for k in ks:
            hits[k][block] = relevant[:, :k].any(axis=1)
        ranks = np.arange(1, relevant.shape[1] + 1)
        within_r = relevant & (ranks[None, :] <= r[:, None])
        precision = np.cumsum(within_r, axis=1) / ranks[None, :]
        r_precision[block] = within_r.sum(axis=1) / r
        average_precision[block] = (precision * within_r).sum(axis=1) / r

    metrics = RetrievalMetrics(
        precision_at_1=float(np.mean(codes[nearest[rows]] == codes[rows])),
        recall_at_k={k: float(np.mean(hits[k][rows])) for k in ks},
        r_precision=float(np.mean(r_precision[rows])),
        map_at_r=float(np.mean(average_precision[rows])),
        queries=int(len(rows)),
    )
    return RetrievalResult(metrics, is_query, relevant_count, nearest, nearest_distance,
                           average_precision, r_precision)


class ExactNeighbours:
    """Exact k nearest *other* vectors of chosen rows, in blocks, deterministically ordered.

    `blocks(rows, depth)` yields (rows of the block, distances (b, K) float32, indices (b, K)
    int64) with K = the largest depth in the block; rows are visited sorted by depth, so a few
    queries with a large R do not make every block wide.
    """

    def __init__(self, vectors: np.ndarray, memory_bytes: int = DEFAULT_MEMORY_BYTES):
        import faiss

        self.vectors = _as_vectors(vectors)
        self.memory_bytes = max(int(memory_bytes), 1)
        n, d = self.vectors.shape
        mean = self.vectors.mean(axis=0, dtype=np.float64)
        self.centred = np.ascontiguousarray(self.vectors - mean.astype(np.float32))
        max_square = float(np.max(np.einsum("ij,ij->i", self.centred, self.centred, dtype=np.float64))) if n else 0.0
        # FAISS computes ‖x‖² + ‖y‖² − 2⟨x, y⟩ in float32: a worst-case bound on its error, doubled.
        self.slack = 2.0 * (2 * d + 8) * _UNIT_ROUNDOFF * max_square + 1e-30
        self.index = faiss.IndexFlatL2(d)
        if n:
            self.index.add(self.centred)

    def blocks(self, rows: np.ndarray, depth, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rows = np.asarray(rows, np.int64)
        n = len(self.vectors)
        depth = np.broadcast_to(np.asarray(depth, np.int64), rows.shape)
        if len(rows) and (depth.min() < 1 or depth.max() > n - 1):
            raise ValueError(f"depth must lie in 1..{n - 1}")
        order = np.lexsort((rows, depth))
        start = 0
        while start < len(rows):
            size = max(1, int(block_size))
            while size > 1 and size * _padded(int(depth[order[min(start + size, len(rows)) - 1]]), n) * _BYTES_PER_ENTRY > self.memory_bytes:
                size //= 2
            chosen = order[start : start + size]
            block = rows[chosen]
            k = int(depth[chosen].max())
            distances, neighbours = self.search(block, k)
            yield block, distances, neighbours
            start += size

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest other vectors of each row: (distances float32 (b, k), indices int64 (b, k))."""
        rows = np.asarray(rows, np.int64)
        n = len(self.vectors)
        k = min(int(k), n - 1)
        out_distances = np.empty((len(rows), k), np.float32)
        out_indices = np.empty((len(rows), k), np.int64)
        pending = np.arange(len(rows))
        width = _padded(k, n)
        while len(pending):
            unsettled = []
            chunk = max(1, self.memory_bytes // (width * _BYTES_PER_ENTRY))
            for start in range(0, len(pending), chunk):
                part = pending[start : start + chunk]
                distances, indices, settled = self._search_once(rows[part], k, width)
                out_distances[part[settled]] = distances[settled]
                out_indices[part[settled]] = indices[settled]
                unsettled.append(part[~settled])
            pending = np.concatenate(unsettled)
            width = min(n, width * 4)
        return out_distances, out_indices

    def _search_once(self, block: np.ndarray, k: int, width: int):
        n = len(self.vectors)
        faiss_distances, candidates = self.index.search(self.centred[block], width)
        exact = self._exact_distances(block, candidates)
        exact[candidates == block[:, None]] = np.inf  # leave-one-out: never the query itself
        order = np.lexsort((candidates, exact), axis=-1)  # by distance, then by position
        exact = np.take_along_axis(exact, order, axis=1)[:, :k]
        candidates = np.take_along_axis(candidates, order, axis=1)[:, :k]
        # Whatever FAISS left out is at least (its last distance − slack) away.
        settled = np.full(len(block), width >= n) | (exact[:, -1] < faiss_distances[:, -1] - self.slack)
        return exact, candidates, settled

    def _exact_distances(self, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return exact_distances(self.vectors, rows, candidates, self.memory_bytes)


def exact_distances(vectors: np.ndarray, rows: np.ndarray, candidates: np.ndarray,
                    memory_bytes: int = DEFAULT_MEMORY_BYTES) -> np.ndarray:
    """Squared distances of each of `rows` to its `candidates` (b, w): float64, rounded to float32.

    The one definition of distance behind every metric and error case. Each value is a sum
    over the d coordinates alone, so it does not depend on how rows and candidates are chunked
    (memory: about `memory_bytes` of float64 differences at a time).
    """
    rows = np.asarray(rows, np.int64)
    candidates = np.asarray(candidates, np.int64)
    d = vectors.shape[1]
    out = np.empty(candidates.shape, np.float32)
    row_chunk = max(1, memory_bytes // max(candidates.shape[1] * d * 8, 1))
    column_chunk = max(1, memory_bytes // max(d * 8, 1))  # when one row's candidates alone are too many
    for start in range(0, len(rows), row_chunk):
        part = slice(start, start + row_chunk)
        query = vectors[rows[part]].astype(np.float64)[:, None, :]
        for first in range(0, candidates.shape[1], column_chunk):
            columns = slice(first, first + column_chunk)
            difference = vectors[candidates[part, columns]].astype(np.float64)
            difference -= query
            np.square(difference, out=difference)
            out[part, columns] = difference.sum(axis=2)
    return out


def _padded(k: int, n: int) -> int:
    """Candidates to ask FAISS for: k, the query itself, and room for ties at the boundary."""
    return min(n, k + 1 + max(8, k // 8))


def _as_vectors(embeddings) -> np.ndarray:
    vectors = np.ascontiguousarray(np.asarray(embeddings, np.float32))
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or infinity")
    return vectors


def _encode(labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must be ({n},) to match the embeddings, got {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, np.bincount(codes, minlength=1)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    values = tuple(sorted({int(k) for k in ks}))
    if not values:
        raise ValueError("ks must name at least one k")
    if values[0] < 1:
        raise ValueError(f"every k must be at least 1, got {values[0]}")
    return values
