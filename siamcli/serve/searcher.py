"""What one micro-batch does: one `embed` call for all its uploads, one FAISS search per k.

Runs on the batcher's model thread. The whole batch uses the snapshot current when it starts,
so an index swapped meanwhile changes the next batch, never half of this one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from siamcli.index.search import QueryResult, search_vectors
from siamcli.models.embed import embed
from siamcli.serve.batcher import Job
from siamcli.serve.state import ServingState


@dataclass(frozen=True)
class Query:
    """One request's queries, answered in this order: its uploads, then its item ids."""

    names: list[str]  # the "query" field of each answer
    pixels: np.ndarray | None  # (uploads, S, S, 3) float32, or None
    stored: np.ndarray | None  # (ids, dim) stored vectors of gallery items, or None
    k: int

    @property
    def uploads(self) -> int:
        return 0 if self.pixels is None else len(self.pixels)


class Searcher:
    """Callable the batcher runs: jobs with a Query payload → one list[QueryResult] per job."""

    def __init__(self, state: ServingState, batch_size: int):
        self.state = state
        self.batch_size = batch_size

    def __call__(self, jobs: Sequence[Job]) -> list[list[QueryResult]]:
        snapshot = self.state.snapshot
        queries: list[Query] = [job.payload for job in jobs]
        vectors = self._vectors(queries)
        by_k: dict[int, list[int]] = defaultdict(list)
        for position, query in enumerate(queries):
            by_k[query.k].append(position)
        answers: list[list] = [[] for _ in queries]
        for k, positions in by_k.items():
            stacked = np.concatenate([vectors[p] for p in positions])
            found = iter(search_vectors(snapshot.loaded, stacked, k, snapshot.similarity_threshold))
            for p in positions:
                answers[p] = [next(found) for _ in queries[p].names]
        return [[QueryResult(name, neighbours) for name, neighbours in zip(q.names, a)] for q, a in zip(queries, answers)]

    def _vectors(self, queries: list[Query]) -> list[np.ndarray]:
        """(queries, dim) per request: its uploads embedded together with every other request's."""
        with_pixels = [q.pixels for q in queries if q.uploads]
        embedded = np.zeros((0, self.state.dim), np.float32)
        if with_pixels:
            embedded = embed(self.state.model, np.concatenate(with_pixels), batch_size=self.batch_size).vectors
        vectors, start = [], 0
        for query in queries:
            own = embedded[start:start + query.uploads]
            start += query.uploads
            parts = [own] + ([query.stored] if query.stored is not None else [])
            vectors.append(np.concatenate(parts).astype(np.float32, copy=False))
        return vectors
