"""Which pairs of images are duplicates: found without comparing every image with every other.

Exact: the same sha256 (sorting the digests: O(N log N)).

Near, by the perceptual method (the default; no model):
  * hash: Hamming distance of the two dhashes ≤ HASH_RADIUS bits of keys.HASH_BITS. Found by
    multi-index hashing (FAISS IndexBinaryMultiHash: the 256 bits cut into 16 substrings of 16,
    every image filed under each; two hashes within 15 bits agree on one substring at least, so
    looking up an image's 16 buckets finds all of them): time ≈ N × the bucket sizes, memory O(N).
  * crop (--crops): each image's LAYOUT_NEIGHBOURS nearest by layout (its 8 × 8 greyscale thumbnail,
    mean 0 and unit length, cosine: FAISS exact search up to EXACT_MAX images, HNSW above) at a
    cosine ≥ LAYOUT_MIN, those not joined already, checked by alignment (align.py): aligned
    similarity ≥ ALIGNED_MIN.
Near, by an embedding (--model RUN, --against INDEX): each image's NEIGHBOURS nearest by cosine
similarity of the model's embeddings, kept when ≥ EMBEDDING_MIN (or --threshold).

The thresholds (thresholds.py) were chosen by measurement on photos that are NOT duplicates
though alike — other photos of the same person, of the same scene: the identity threshold would
call those duplicates.
"""

from __future__ import annotations

import numpy as np

from siamcli.dedupe.align import CHUNK, aligned_similarity, shrink
from siamcli.dedupe.keys import HASH_BITS
from siamcli.dedupe.thresholds import ALIGNED_MIN, HASH_RADIUS, LAYOUT_MIN
from siamcli.events import NO_EVENTS, Events

SUBSTRINGS = 16  # multi-index hashing: complete for radii below SUBSTRINGS
NEIGHBOURS = 8  # nearest images searched per image by embedding
LAYOUT_NEIGHBOURS = 4  # … by layout, for the crop check: measured against 5 and 8 (docs/dedupe.md)
EXACT_MAX = 20_000  # exact nearest-neighbour search up to this many images, HNSW above
HNSW_LINKS, HNSW_EF_SEARCH = 32, 64
SEARCH_CHUNK = 4096  # queries per FAISS call

Pairs = tuple[np.ndarray, np.ndarray]  # (first rows, second rows), int64, first < second


def no_pairs() -> Pairs:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def exact_pairs(digests: np.ndarray) -> Pairs:
    """Each row joined to the first row with the same (n, 32) digest."""
    if len(digests) < 2:
        return no_pairs()
    _, first, inverse = np.unique(np.ascontiguousarray(digests).view(np.dtype((np.void, digests.shape[1]))).ravel(),
                                  return_index=True, return_inverse=True)
    rows = np.arange(len(digests))
    leader = first[inverse.ravel()]
    copies = rows != leader
    return _ordered(leader[copies], rows[copies])


def hash_pairs(codes: np.ndarray, radius: int = HASH_RADIUS) -> Pairs:
    """Every pair of (n, HASH_BITS / 8) packed hashes within `radius` bits (radius < SUBSTRINGS)."""
    import faiss

    if not 0 <= radius < SUBSTRINGS:
        raise ValueError(f"multi-index hashing finds radii below {SUBSTRINGS}, not {radius}")
    if len(codes) < 2:
        return no_pairs()
    index = faiss.IndexBinaryMultiHash(HASH_BITS, SUBSTRINGS, HASH_BITS // SUBSTRINGS)
    index.nflip = 0
    codes = np.ascontiguousarray(codes)
    index.add(codes)
    firsts, seconds = [], []
    for start in range(0, len(codes), SEARCH_CHUNK):
        limits, _, found = index.range_search(codes[start:start + SEARCH_CHUNK], radius + 1)  # FAISS: distance < radius + 1
        queries = start + np.repeat(np.arange(len(limits) - 1), np.diff(limits).astype(np.int64))
        keep = found > queries
        firsts.append(queries[keep])
        seconds.append(found[keep].astype(np.int64))
    return np.concatenate(firsts), np.concatenate(seconds)


def nearest_pairs(vectors: np.ndarray, k: int = NEIGHBOURS, minimum: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, cosine) of each (unit) row's k nearest other rows, each pair once,
    those with cosine ≥ `minimum` when given."""
    count = len(vectors)
    k = min(k, count - 1)
    if k < 1:
        return *no_pairs(), np.zeros(0, np.float32)
    vectors = np.ascontiguousarray(vectors, np.float32)
    index = _inner_product_index(vectors.shape[1], count)
    index.add(vectors)
    firsts, seconds, scores = [], [], []
    for start in range(0, count, SEARCH_CHUNK):
        found_scores, found = index.search(vectors[start:start + SEARCH_CHUNK], k + 1)
        queries = np.repeat(np.arange(start, start + len(found)), k + 1)
        found, found_scores = found.ravel(), found_scores.ravel()
        keep = (found >= 0) & (found != queries)
        if minimum is not None:
            keep &= found_scores >= minimum
        firsts.append(queries[keep])
        seconds.append(found[keep])
        scores.append(found_scores[keep])
    first, second = _ordered(np.concatenate(firsts), np.concatenate(seconds))
    score = np.concatenate(scores)
    return _unique(first, second, score)


def crop_pairs(thumbs: np.ndarray, rows: np.ndarray, labels: np.ndarray, events: Events = NO_EVENTS) -> tuple[Pairs, int]:
    """((first, second) of the pairs among `rows` that the crop check accepts, how many it checked);
    `thumbs`: (n, S, S) thumbnails, `labels`: the group of each of its rows so far (pairs inside
    one are not checked)."""
    layout = np.concatenate([layout_vectors(thumbs[rows[start:start + CHUNK]]) for start in range(0, len(rows), CHUNK)])
    first, second = lifted(nearest_pairs(layout, LAYOUT_NEIGHBOURS, minimum=LAYOUT_MIN)[:2], rows)
    apart = labels[first] != labels[second]
    first, second = first[apart], second[apart]
    events.stage("checking crops", len(first))
    accepted = np.zeros(len(first), bool)
    for start in range(0, len(first), CHUNK):
        chunk = slice(start, start + CHUNK)
        accepted[chunk] = aligned_similarity(thumbs, first[chunk], second[chunk]) >= ALIGNED_MIN
        events.advance(len(first[chunk]))
    return (first[accepted], second[accepted]), len(first)


def layout_vectors(thumbs: np.ndarray) -> np.ndarray:
    """(n, 64) unit rows: each (n, S, S) thumbnail averaged down to 8 × 8, mean 0."""
    small = shrink(np.asarray(thumbs, np.float32), 8).reshape(len(thumbs), 64)
    small = small - small.mean(axis=1, keepdims=True)
    return (small / (np.linalg.norm(small, axis=1, keepdims=True) + 1e-6)).astype(np.float32)


def _inner_product_index(dim: int, count: int):
    import faiss

    if count <= EXACT_MAX:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _ordered(first: np.ndarray, second: np.ndarray) -> Pairs:
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    return np.minimum(first, second), np.maximum(first, second)


def _unique(first: np.ndarray, second: np.ndarray, score: np.ndarray):
    """Each pair once (a pair found from both ends is kept with its first score)."""
    if len(first) == 0:
        return first, second, score
    _, keep = np.unique(first * (int(second.max()) + 1) + second, return_index=True)
    return first[keep], second[keep], score[keep]


def leaders(count: int, exact: Pairs) -> np.ndarray:
    """The rows that are not a later copy of another (one row per distinct content)."""
    copy = np.zeros(count, bool)
    copy[exact[1]] = True
    return np.flatnonzero(~copy)


def lifted(found: Pairs, rows: np.ndarray) -> Pairs:
    """Pairs among `rows` (positions in it) as pairs of the rows themselves."""
    return rows[found[0]], rows[found[1]]


def joined(found: list[Pairs]) -> Pairs:
    if not found:
        return no_pairs()
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
