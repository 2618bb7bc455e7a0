"""From one label per image to clusters people read: numbered largest first, each with its most
central image (the representative) and how alike its images are (cohesion).

For unit vectors x_i of a cluster with sum s, the summed similarity of member i to all members
is x_i · s, so the representative (the member most similar to the others, a medoid) and the
mean pairwise similarity (|s|² − n) / (n(n − 1)) cost O(n·d), never n×n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

ROW_CHUNK = 65_536  # rows scored at a time: a (chunk, d) gather, not an (N, d) one


@dataclass(frozen=True)
class Cluster:
    id: int  # 0 = the largest; ties in size by the first image's position
    members: np.ndarray  # positions of the images, most central first (the representative is members[0])
    cohesion: float | None  # mean pairwise cosine similarity; None for a single image

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def representative(self) -> int:
        return int(self.members[0])


def clusters_from_labels(labels: np.ndarray, vectors: np.ndarray) -> list[Cluster]:
    """Number the clusters largest first and describe each (module docstring)."""
    count = len(labels)
    if count == 0:
        return []
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(-1)
    sizes = np.bincount(dense)
    first = np.full(len(sizes), count, np.int64)
    np.minimum.at(first, dense, np.arange(count))
    numbering = np.lexsort((first, -sizes))  # new id → old label
    new_id = np.empty_like(numbering)
    new_id[numbering] = np.arange(len(numbering))
    ids = new_id[dense]
    sums = _sums(ids, vectors, len(sizes))
    centrality = np.empty(count, np.float64)
    for start in range(0, count, ROW_CHUNK):
        part = slice(start, start + ROW_CHUNK)
        centrality[part] = np.einsum("ij,ij->i", vectors[part], sums[ids[part]])
    order = np.lexsort((np.arange(count), -centrality, ids))  # by cluster, most central first
    bounds = np.concatenate([[0], np.cumsum(sizes[numbering])])
    norms = np.einsum("ij,ij->i", sums, sums.astype(np.float64))
    clusters = []
    for cluster_id in range(len(sizes)):
        members = order[bounds[cluster_id]:bounds[cluster_id + 1]]
        n = len(members)
        cohesion = None if n < 2 else float((norms[cluster_id] - n) / (n * (n - 1)))
        clusters.append(Cluster(cluster_id, members, cohesion))
    return clusters


def _sums(ids: np.ndarray, vectors: np.ndarray, clusters: int) -> np.ndarray:
    """(clusters, d) float32: the sum of each cluster's vectors (one sparse product)."""
    indicator = sparse.csr_array((np.ones(len(ids), np.float32), (ids, np.arange(len(ids)))), shape=(clusters, len(ids)))
    return np.asarray(indicator @ vectors, np.float32)


def labels_of(clusters: list[Cluster], count: int) -> np.ndarray:
    """(count,) cluster id of every image."""
    labels = np.empty(count, np.int64)
    for cluster in clusters:
        labels[cluster.members] = cluster.id
    return labels
