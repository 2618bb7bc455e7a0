"""The model and the index the service answers from, and swapping the index while serving.

The model is loaded once. The index is held as an immutable `Snapshot`; a batch of searches
takes the current snapshot once and uses it to the end, so a swap never changes an answer
half-way: in-flight searches finish on the old index, which is freed when the last of them
lets go (a memory-mapped file stays readable after `siamcli index` deletes the old directory,
since the mapping holds the file).

`siamcli index --append/--prune` adds a segment and replaces manifest.json by a rename (a new
inode); `--force`/`--compact` build a new directory and rename it onto the old name (a new
inode for the folder). A watcher thread stats both every `interval` seconds; on a change it
loads and validates the new index off the request path, then swaps one reference. Segments
are never rewritten in place, so the old snapshot keeps answering from its files meanwhile. An index that does not load, or was built with another
model, is refused: the old one keeps serving, and /readyz and the log say why. The match
decision (threshold and error rates) is the model run's `calibration.json`, read again
whenever that file changes; queries and verify use the same one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamcli.calibration import CALIBRATION_FILE, similarity_threshold
from siamcli.errors import UserError
from siamcli.index import manifest as mf
from siamcli.index.items import IndexItem
from siamcli.index.locate import resolve_index_dir
from siamcli.index.search import load_query_model, open_index
from siamcli.index.store import LoadedIndex, check_model, load_index
from siamcli.models.embed import model_image_size
from siamcli.pairs.verify import Decision, decision_for

log = logging.getLogger("siamcli.serve")

Signature = tuple  # (dir inode, dir device, manifest inode, manifest mtime, manifest size)


@dataclass(frozen=True)
class Snapshot:
    """One loaded index, never mutated: what a batch of searches sees from start to end."""

    loaded: LoadedIndex  # its items read once (`entries`): searches name results from memory
    rows: dict[int, int]  # item id → position in loaded.entries
    by_label: dict[str, list[int]]  # label → positions, in index order
    decision: Decision  # the run's calibration for this model: its threshold and rates, or why there is none
    signature: Signature | None  # of the directory when it was loaded
    loaded_at: float = field(default_factory=time.time)

    @property
    def count(self) -> int:
        return self.loaded.count

    @property
    def threshold(self) -> float | None:
        """The run's reliable calibrated squared-L2 distance; None when there is none."""
        calibration = self.decision.calibration
        return None if calibration is None else calibration.threshold

    @property
    def similarity_threshold(self) -> float | None:
        return similarity_threshold(self.threshold)

    def item(self, item_id: int) -> IndexItem | None:
        position = self.rows.get(item_id)
        return None if position is None else self.loaded.entries[position][1]

    def item_at(self, position: int) -> IndexItem:
        return self.loaded.entries[position][1]

    def vector(self, item_id: int) -> np.ndarray:
        """(1, dim) stored embedding of an item, "more like this" without the model (KeyError if not indexed)."""
        return self.loaded.vectors([self.loaded.entries[self.rows[item_id]][0]])


def signature(directory: Path) -> Signature | None:
    """What changes when the index is swapped or updated; None while the path is missing."""
    try:
        folder = os.stat(directory)
        manifest = os.stat(directory / mf.MANIFEST)
    except OSError:
        return None
    return (folder.st_ino, folder.st_dev, manifest.st_ino, manifest.st_mtime_ns, manifest.st_size)


def make_snapshot(loaded: LoadedIndex, fingerprint: str, model_path: Path, before: Signature | None) -> Snapshot:
    """Read every segment's items once and index them by id and label."""
    entries = loaded.entries
    by_label: dict[str, list[int]] = {}
    for position, (_, item) in enumerate(entries):
        by_label.setdefault(item.label, []).append(position)
    rows = {item.id: position for position, (_, item) in enumerate(entries)}
    return Snapshot(loaded=loaded, rows=rows, by_label=by_label, decision=decision_for(model_path.parent, fingerprint), signature=before)


def label_counts(snapshot: Snapshot) -> list[tuple[str, int]]:
    return sorted(Counter({label: len(rows) for label, rows in snapshot.by_label.items()}).items())


class ServingState:
    """The model (fixed) and the current index snapshot (swapped when the directory changes)."""

    def __init__(self, directory: Path, model, model_path: Path, fingerprint: str, snapshot: Snapshot):
        self.directory = directory
        self.model = model
        self.model_path = model_path
        self.fingerprint = fingerprint
        self.image_size = model_image_size(model)  # what `siamcli query` resizes files to
        self.dim = snapshot.loaded.dim
        self.snapshot = snapshot  # replaced as a whole: readers take it once
        self.problem: str | None = None  # why the index at `directory` is not the one serving
        self.reloads = 0
        self.refusals = 0
        self._attempted = snapshot.signature
        self._calibration: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """Load the index again if its directory changed; True when a new one now serves."""
        self._follow_calibration()
        current = signature(self.directory)
        if current is None or current == self._attempted:
            return False  # missing (mid-swap, or deleted: keep serving) or already tried
        try:
            loaded = load_index(self.directory)
            check_model(loaded.manifest, self.model_path, self.fingerprint, self.directory)
            if loaded.dim != self.dim:
                raise UserError(f"index {self.directory} holds {loaded.dim}-d vectors, the model makes {self.dim}-d ones")
            snapshot = make_snapshot(loaded, self.fingerprint, self.model_path, current)
        except Exception as exc:  # noqa: BLE001 — any failure is reported; the old index keeps serving
            if signature(self.directory) != current:
                return False  # swapped again while loading: try the newer one next time
            self._attempted = current
            self.refusals += 1
            self.problem = f"the index at {self.directory} changed but was refused ({exc}); still serving the previous one ({self.snapshot.count} items)"
            log.warning(self.problem)
            return False
        if signature(self.directory) != current:
            return False  # changed during the load; the next poll loads the newer one
        self._attempted = current
        previous, self.snapshot = self.snapshot, snapshot
        self.problem = None
        self.reloads += 1
        log.info("index reloaded from %s: %d items (was %d)", self.directory, snapshot.count, previous.count)
        return True

    def _follow_calibration(self) -> None:
        """A new `siamcli evaluate` of the model takes effect without a restart."""
        path = self.model_path.parent / CALIBRATION_FILE
        try:
            stat = os.stat(path)
            current = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            current = None
        if current == self._calibration:
            return
        self._calibration = current
        decision = decision_for(self.model_path.parent, self.fingerprint)
        if decision != self.snapshot.decision:
            self.snapshot = dataclasses.replace(self.snapshot, decision=decision)
            log.info("match threshold now %s (from %s)", self.snapshot.threshold, path)

    def decision(self, threshold: float | None = None) -> Decision:
        """How a pair's similarity is decided: by `threshold` (a cosine similarity) when one is
        given, else by the run's calibration as it is now."""
        if threshold is None:
            return self.snapshot.decision
        return decision_for(self.model_path.parent, self.fingerprint, threshold)

    def watch(self, interval: float) -> None:
        """Poll in a daemon thread every `interval` seconds (0: never)."""
        if interval <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                self.poll()

        self._thread = threading.Thread(target=loop, name="siamcli-index-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def open_state(index: str | None, model: str | None) -> ServingState:
    """Load the index, then the model it was built with (or --model, which must be that model)."""
    directory = resolve_index_dir(index, model)
    before = signature(directory)
    loaded, model_path, fingerprint = open_index(directory, model)
    snapshot = make_snapshot(loaded, fingerprint, model_path, before)
    return ServingState(directory, load_query_model(model_path, loaded), model_path, fingerprint, snapshot)
