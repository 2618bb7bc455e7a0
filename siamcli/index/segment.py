"""One immutable segment of an index: its FAISS index, its rows' items and vectors, its tombstones.

A segment is a folder written once (the index folder itself for the base segment,
`segments/NNNNNN/` for those updates add) and never changed afterwards; rows it held that were
later removed are tombstones (`deleted`, sorted row numbers) kept by the manifest, not edits.
Searching skips them: it asks FAISS for a few more rows than wanted, in proportion to the share
of rows deleted, and asks again deeper in the rare case too few live ones came back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from siamcli.errors import CorruptArtifactError
from siamcli.events import NO_EVENTS, Events
from siamcli.index import faiss_index, faiss_io
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.hints import REBUILD
from siamcli.index.items import IndexItem, read_items, read_rows, row_range, write_items
from siamcli.index.plan import FLAT, IndexPlan, keeps_vectors
from siamcli.index.recall import RECALL_TARGET

MMAP_TYPES = ("ivf", "ivfpq")  # index types a query process memory-maps


@dataclass
class Segment:
    number: int  # 0 = the base (the index folder itself); later segments 1, 2, … in the order written
    directory: Path
    rows: int  # rows written, deleted ones included
    record: mf.SegmentRecord  # factory, index_type, search_params, recall_at_10, files
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted rows removed since
    mmap: bool = False  # map the FAISS file instead of reading it (query processes, big IVF indexes)
    galleries: list[str] = field(default_factory=list)  # the manifest's: stored paths are relative to them
    _index: object = None

    @property
    def live(self) -> int:
        return self.rows - len(self.deleted)

    @property
    def files(self) -> dict:
        return self.record.files

    @property
    def items_path(self) -> Path:
        return self.directory / mf.ITEMS_FILE

    @property
    def stores_vectors_in_index(self) -> bool:
        """True when the FAISS index holds the (8-bit) vectors and there is no embeddings.npy."""
        return mf.EMBEDDINGS_FILE not in self.files

    @property
    def index(self):
        """The FAISS index (read on first use), with the segment's search parameters applied."""
        if self._index is None:
            mmap = self.mmap and self.record.index_type in MMAP_TYPES
            index = faiss_io.read_index(self.directory / mf.INDEX_FILE, mmap=mmap)
            self.check_index(index)
            params = self.record.search_params or {}
            if not isinstance(params, dict):
                raise CorruptArtifactError(f"the manifest of {self.directory}: search_params is not an object; {REBUILD}")
            faiss_io.set_search_params(index, params)
            self._index = index
        return self._index

    def check_index(self, index) -> None:
        faiss = faiss_io.faiss_module()
        problems = []
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            problems.append(f"{mf.INDEX_FILE} does not search by inner product")
        if index.ntotal != self.rows:
            problems.append(f"{mf.INDEX_FILE} holds {index.ntotal} vectors, the manifest {self.rows}")
        if problems:
            raise CorruptArtifactError(f"index segment {self.directory} is inconsistent: {'; '.join(problems)}; "
                                       f"{REBUILD}")

    def check_items(self) -> None:
        """items.sqlite holds rows 0 … rows-1 (two page reads)."""
        count, span = row_range(self.items_path)
        if count != self.rows or span != self.rows:
            raise CorruptArtifactError(f"index segment {self.directory} is inconsistent: {mf.ITEMS_FILE} holds {count} rows, "
                                       f"the manifest {self.rows}; {REBUILD}")

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (n, ≤ depth), best first, tombstones removed (row -1 pads)."""
        if self.live <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        depth = min(depth, self.live)
        share = len(self.deleted) / self.rows
        ask = min(self.rows, depth + math.ceil(2 * depth * share / max(1e-9, 1 - share)) + (8 if len(self.deleted) else 0))
        while True:
            scores, rows = self.index.search(queries, ask)
            if rows.size and rows.max() >= self.rows:
                raise CorruptArtifactError(f"index segment {self.directory} returned row {rows.max()} of {self.rows}; "
                                           f"it is damaged: {REBUILD}")
            if len(self.deleted):
                rows = np.where(np.isin(rows, self.deleted), -1, rows)
            found = (rows >= 0).sum(axis=1)
            if ask >= self.rows or found.min(initial=depth) >= depth:
                break
            ask = min(self.rows, ask * 2)  # many of the nearest rows were deleted: look deeper
        order = np.argsort(rows < 0, axis=1, kind="stable")[:, :depth]  # live rows first, in score order
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def items_at(self, rows) -> dict[int, IndexItem]:
        return read_rows(self.items_path, rows, self.galleries)

    def live_items(self) -> Iterator[tuple[int, IndexItem]]:
        """(row, item) of every live row, in row order."""
        dead = set(self.deleted.tolist())
        for row, item in enumerate(read_items(self.items_path, self.galleries)):
            if row not in dead:
                yield row, item

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), dim) float32 stored vectors of these rows (exact, or decoded 8-bit ones)."""
        rows = np.asarray(rows, np.int64)
        if not self.stores_vectors_in_index:
            return vector_file.read_rows(self.directory / mf.EMBEDDINGS_FILE, rows)
        if not len(rows):
            return np.zeros((0, self.index.d), np.float32)
        return np.concatenate([faiss_index.reconstruct_rows(self.index, int(r), 1) for r in rows])

    def iter_vectors(self, wanted: np.ndarray, chunk_rows: int = vector_file.CHUNK_ROWS) -> Iterator[np.ndarray]:
        """The vectors of the rows where `wanted` (bool, one per row) is True, in row order, a
        chunk at a time: rebuilds stream them."""
        if not self.stores_vectors_in_index:
            for first, chunk in vector_file.iter_chunks(self.directory / mf.EMBEDDINGS_FILE, chunk_rows):
                yield chunk[wanted[first:first + len(chunk)]]
            return
        for first in range(0, self.rows, chunk_rows):
            count = min(chunk_rows, self.rows - first)
            if wanted[first:first + count].any():
                yield faiss_index.reconstruct_rows(self.index, first, count)[wanted[first:first + count]]


def write_segment(folder: Path, items: Iterable[IndexItem], plan: IndexPlan, rows: int, seed: int,
                  galleries: list[str], events: Events = NO_EVENTS) -> mf.SegmentRecord:
    """Finish a segment whose embeddings.npy (`rows` vectors) is in `folder`: build and tune its
    FAISS index, write index.faiss and items.sqlite (`items`, row order, paths stored under their
    `galleries`: the manifest's list), and drop embeddings.npy
    when the index stores the vectors itself. Returns the segment's record (base: name "", number 0)."""
    vectors_path = folder / mf.EMBEDDINGS_FILE
    index, plan, tuning = build_faiss_index(vectors_path, plan, rows, seed, events)
    events.stage("writing the index")
    faiss_io.write_index(index, folder / mf.INDEX_FILE)
    del index
    written = write_items(folder / mf.ITEMS_FILE, items, galleries)
    if written != rows:
        raise RuntimeError(f"segment {folder}: {written} items for {rows} vectors")
    if not keeps_vectors(plan.factory):
        vectors_path.unlink()  # the index keeps them (8-bit): stored once, not twice
    return mf.SegmentRecord(
        rows=rows, factory=plan.factory, index_type=plan.index_type, chosen_by=plan.chosen_by, search_params=tuning.params,
        recall_at_10=round(tuning.recall_at_10, 4), recall_sample=tuning.sample, recall_count=rows,
        files={name: mf.file_record(folder / name) for name in mf.SEGMENT_FILES if (folder / name).exists()},
    )


def build_faiss_index(vectors_path: Path, plan: IndexPlan, rows: int, seed: int, events: Events = NO_EVENTS):
    """(index, plan, tuning) built from every row of the vectors file and tuned to the recall target.

    `auto` falls back to an exact Flat index when the approximate one cannot reach the recall
    target; an explicitly requested type is kept, with a message giving its best recall.
    """
    events.stage(f"building {plan.factory} over {rows} vectors")
    index, tuning = faiss_index.build_and_tune(vectors_path, plan, seed, on_stage=events.stage)
    if not tuning.reached:
        if plan.chosen_by == "auto":
            events.message(f"{plan.factory} reached recall@10 {tuning.recall_at_10:.3f} < {RECALL_TARGET}; "
                           "building an exact Flat index instead")
            plan = FLAT
            index, tuning = faiss_index.build_and_tune(vectors_path, plan)
        else:
            events.message(f"{plan.factory} reaches recall@10 {tuning.recall_at_10:.3f} at best, below "
                           f"{RECALL_TARGET}; use --index-type flat (exact) or auto")
    return index, plan, tuning
