"""Retrieval metrics, leave-one-out over the evaluated set (definitions: DESIGN.md).

PROVISIONAL exact implementation for small sets; the evaluation work replaces it with a
blocked FAISS version with the same signature and results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RetrievalMetrics:
    precision_at_1: float
    recall_at_k: dict[int, float] = field(default_factory=dict)
    r_precision: float = 0.0
    map_at_r: float = 0.0
    queries: int = 0


def retrieval_metrics(embeddings: np.ndarray, labels, ks=(1, 5, 10)) -> RetrievalMetrics:
    embeddings = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels)
    n = len(labels)
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]
    relevant = labels[order] == labels[:, None]
    r = relevant.sum(axis=1)
    queries = r > 0
    if not queries.any():
        return RetrievalMetrics(float("nan"), {k: float("nan") for k in ks}, float("nan"), float("nan"), 0)
    rel = relevant[queries]
    rq = r[queries]
    p1 = rel[:, 0].mean()
    recall = {k: float(rel[:, :k].any(axis=1).mean()) for k in ks}
    ranks = np.arange(1, n)
    rp, ap = [], []
    for row, count in zip(rel, rq):
        top = row[:count]
        rp.append(top.mean())
        precision = np.cumsum(top) / ranks[:count]
        ap.append((precision * top).sum() / count)
    return RetrievalMetrics(float(p1), recall, float(np.mean(rp)), float(np.mean(ap)), int(queries.sum()))
