"""A gallery through the embedding path, vectors straight to disk.

`siamcli.models.embed.embedding_stream` embeds batch by batch; each batch of vectors is written
to a `VectorWriter` as soon as it is computed, so memory stays flat however large the gallery.
Content hashes, sizes and modification times of the files are taken on a background thread
meanwhile (hashlib releases the GIL).
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from siamcli.data.scan import Skipped
from siamcli.index.items import content_hash
from siamcli.index.vectors import VectorWriter
from siamcli.models.embed import embedding_stream


@dataclass
class StreamOutcome:
    kept: array = field(default_factory=lambda: array("q"))  # input positions embedded, in the order written (8 bytes each)
    failures: list[Skipped] = field(default_factory=list)  # images that did not decode, with why
    digests: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8))  # (n, 32) sha256 per input path; 0 = unreadable
    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per input path, stat before hashing (-1: unreadable)
    mtimes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # st_mtime_ns, likewise
    seconds: float = 0.0  # wall time of the embedding loop
    first_batch_seconds: float = 0.0  # of which the first batch (pipeline start, tracing the model)
    cpu_seconds: float = 0.0  # process CPU time (all threads) during the loop

    @property
    def images_per_second(self) -> float:
        total = len(self.kept) + len(self.failures)
        return total / self.seconds if self.seconds > 0 else 0.0

    def sha256(self, position: int) -> str:
        """Hex sha256 of input `position` ("" when it could not be read)."""
        digest = self.digests[position]
        return digest.tobytes().hex() if digest.any() else ""


class _Hasher(threading.Thread):
    """sha256, size and mtime of every path, into arrays: 48 bytes per image, not objects.

    The file is stat'ed before it is read: if it changes meanwhile, the recorded time is older
    than the file's, so the next --append reads it again rather than trusting a stale hash.
    """

    def __init__(self, paths: Sequence[str], known: dict[int, str]):
        super().__init__(daemon=True, name="siamcli-hash")
        self.paths = paths
        self.known = known
        self.digests = np.zeros((len(paths), 32), np.uint8)
        self.sizes = np.full(len(paths), -1, np.int64)
        self.mtimes = np.full(len(paths), -1, np.int64)

    def run(self) -> None:
        for i, path in enumerate(self.paths):
            try:
                info = os.stat(path)
                self.sizes[i], self.mtimes[i] = info.st_size, info.st_mtime_ns
            except OSError:
                pass
            digest = self.known.get(i) or content_hash(path)
            if digest:
                self.digests[i] = np.frombuffer(bytes.fromhex(digest), np.uint8)


def embed_to_file(
    model,
    paths: Sequence[str],
    writer: VectorWriter,
    image_size: int,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
    known_hashes: dict[int, str] | None = None,
) -> StreamOutcome:
    """Embed `paths` in order; write the vectors of those that decode; hash every file."""
    hasher = _Hasher(paths, known_hashes or {})
    hasher.start()
    outcome = StreamOutcome()
    start, cpu_start = time.perf_counter(), time.process_time()
    if len(paths):
        for batch in embedding_stream(model, paths, batch_size, image_size):
            outcome.failures.extend(batch.failures)
            writer.write(batch.vectors)
            outcome.kept.extend(batch.kept.tolist())
            if not outcome.first_batch_seconds:
                outcome.first_batch_seconds = time.perf_counter() - start
            if on_progress:
                on_progress(len(batch.positions))
    outcome.seconds = time.perf_counter() - start
    outcome.cpu_seconds = time.process_time() - cpu_start
    hasher.join()
    outcome.digests, outcome.sizes, outcome.mtimes = hasher.digests, hasher.sizes, hasher.mtimes
    return outcome
