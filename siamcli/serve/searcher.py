"""What one micro-batch does: resize its uploads, one `embed` call, one FAISS search per depth (k, or k + 1
when a queried item is to be left out of its own answer). A verify request's uploads join the
same forward pass (`ToEmbed`) and are answered with their embeddings, searched for nothing.

Runs on the batcher's model thread. The whole batch uses the snapshot current when it starts,
so an index swapped meanwhile changes the next batch, never half of this one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from siamcli.index.faiss_io import faiss_module
from siamcli.index.search import Neighbour, QueryResult, search_vectors
from siamcli.models.embed import embed, resize_batch
from siamcli.serve.batcher import Job
from siamcli.serve.state import ServingState


@dataclass(frozen=True)
class Query:
    """One request's queries, answered in this order: its uploads, then its item ids."""

    names: list[str]  # the "query" field of each answer
    images: list[np.ndarray]  # decoded uploads (images.decode_upload), resized with the batch
    stored: np.ndarray | None  # (ids, dim) stored vectors of gallery items, or None
    k: int
    leave_out: Sequence[int | None] = ()  # per query (as names): an item id kept out of its answer (exclude_self)

    @property
    def uploads(self) -> int:
        return len(self.images)

    @property
    def depth(self) -> int:
        """Neighbours to search for: one more when an item may be left out, so k remain."""
        return self.k + any(item is not None for item in self.leave_out)

    def answers(self, found: list[list[Neighbour]]) -> list[QueryResult]:
        leave_out = list(self.leave_out) or [None] * len(self.names)
        return [QueryResult(name, _without(neighbours, item, self.k)) for name, neighbours, item in zip(self.names, found, leave_out)]


@dataclass(frozen=True)
class ToEmbed:
    """Uploads to embed only (verify): answered with their (uploads, dim) embeddings, in order."""

    images: list[np.ndarray]  # decoded uploads (images.decode_upload), resized with the batch

    @property
    def uploads(self) -> int:
        return len(self.images)


def _without(neighbours: list[Neighbour], item_id: int | None, k: int) -> list[Neighbour]:
    """The first k neighbours that are not `item_id`, ranked again from 1."""
    if item_id is None:
        return neighbours[:k]
    kept = [n for n in neighbours if n.id != item_id][:k]
    return [dataclasses.replace(n, rank=rank) for rank, n in enumerate(kept, 1)]


class Searcher:
    """Callable the batcher runs: a job with a Query payload → its list[QueryResult]; one with a
    ToEmbed payload → its (uploads, dim) embeddings.

    FAISS searches with `search_threads` OpenMP threads (set in the thread that searches): one
    by default, since a batch is small and OpenMP threads spinning at a barrier while TensorFlow
    and the HTTP threads want the same cores cost up to tens of milliseconds a search.
    """

    def __init__(self, state: ServingState, batch_size: int, search_threads: int = 1):
        self.state = state
        self.batch_size = batch_size
        self.search_threads = search_threads
        self._threads_set: set[int] = set()

    def __call__(self, jobs: Sequence[Job]) -> list[list[QueryResult]]:
        self._set_search_threads()
        snapshot = self.state.snapshot
        queries: list[Query | ToEmbed] = [job.payload for job in jobs]
        vectors = self._vectors(queries)
        by_depth: dict[int, list[int]] = defaultdict(list)
        for position, query in enumerate(queries):
            if isinstance(query, Query):
                by_depth[query.depth].append(position)
        answers: list = list(vectors)  # a ToEmbed's answer; a Query's is replaced by its search
        for depth, positions in by_depth.items():
            stacked = np.concatenate([vectors[p] for p in positions])
            found = iter(search_vectors(snapshot.loaded, stacked, depth, snapshot.similarity_threshold))
            for p in positions:
                answers[p] = queries[p].answers([next(found) for _ in queries[p].names])
        return answers

    def _set_search_threads(self) -> None:
        if threading.get_ident() not in self._threads_set:  # an OpenMP setting of the calling thread
            faiss_module().omp_set_num_threads(self.search_threads)
            self._threads_set.add(threading.get_ident())

    def _vectors(self, queries: list[Query | ToEmbed]) -> list[np.ndarray]:
        """(queries, dim) per request: its uploads embedded together with every other request's."""
        images = [image for q in queries for image in q.images]
        embedded = np.zeros((0, self.state.dim), np.float32)
        if images:
            pixels = resize_batch(images, self.state.image_size)
            embedded = embed(self.state.model, pixels, batch_size=self.batch_size).vectors
        vectors, start = [], 0
        for query in queries:
            own = embedded[start:start + query.uploads]
            start += query.uploads
            parts = [own] + ([query.stored] if isinstance(query, Query) and query.stored is not None else [])
            vectors.append(np.concatenate(parts).astype(np.float32, copy=False))
        return vectors
