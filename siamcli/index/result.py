"""IndexResult: what `siamcli index` did, for the summary table and `--json`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.data.scan import Skipped
from siamcli.index.changes import Changes
from siamcli.index.store import LoadedIndex


@dataclass
class IndexResult:
    index_dir: Path
    gallery: str
    model_path: Path
    mode: str  # build | append | prune | append+prune | compact | merge
    written: bool  # False when the index was already up to date
    index_type: str
    factory: str
    count: int
    added: int = 0
    replaced: int = 0
    removed: int = 0
    kept: int = 0  # rows of the previous index kept as they were
    skipped: list[Skipped] = field(default_factory=list)
    recall_at_10: float = 1.0
    search_params: dict = field(default_factory=dict)
    threshold: float | None = None  # the model run's reliable match threshold, for the summary (not stored)
    embedded_images: int = 0
    hashed_images: int = 0  # indexed files read again because their size or time changed
    embed_seconds: float = 0.0
    first_batch_seconds: float = 0.0  # part of embed_seconds: pipeline start and tracing the model
    embed_cpu_seconds: float = 0.0  # process CPU time (all threads) while embedding
    seconds: float = 0.0
    index_bytes: int = 0  # all files of the index (every segment)
    bytes_written: int = 0  # by this command: new segment, tombstones, manifest (a rewrite: everything)
    segments: int = 1
    rewrite_reason: str = ""  # why an update rewrote the whole index ("" when it added a segment)

    @property
    def images_per_second(self) -> float:
        return self.embedded_images / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> dict:
        data = {key: getattr(self, key) for key in (
            "mode", "written", "index_type", "factory", "count", "added", "replaced", "removed", "kept", "recall_at_10",
            "search_params", "threshold", "index_bytes", "bytes_written", "segments", "hashed_images")}
        return {
            "index_dir": str(self.index_dir), "gallery": self.gallery, "model": str(self.model_path), **data,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "rewrite_reason": self.rewrite_reason,
            "embed_seconds": round(self.embed_seconds, 3),
            "first_batch_seconds": round(self.first_batch_seconds, 3),
            "embed_cpu_seconds": round(self.embed_cpu_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "seconds": round(self.seconds, 3),
        }


def record_result(result: IndexResult, manifest: dict, changes: Changes, outcome, written_rows: int, bytes_written: int) -> None:
    """Fill the result from the manifest now in place and what this command did."""
    result.written = True
    result.index_type, result.factory, result.count = manifest["index_type"], manifest["factory"], manifest["count"]
    result.recall_at_10, result.search_params = manifest["recall_at_10"], manifest["search_params"]
    result.replaced = sum(1 for p in (outcome.kept if outcome else []) if changes.paths[p] in changes.changed_paths)
    result.added = written_rows - result.replaced
    result.removed = len(changes.removed)
    result.kept = len(changes.kept)
    result.segments = 1 + len(manifest["segments"])
    result.index_bytes = index_bytes(manifest)
    result.bytes_written = bytes_written
    if outcome is not None:
        result.skipped += outcome.failures
        result.embedded_images, result.embed_seconds = len(changes.paths), outcome.seconds
        result.first_batch_seconds, result.embed_cpu_seconds = outcome.first_batch_seconds, outcome.cpu_seconds


def index_bytes(manifest: dict) -> int:
    """Bytes of every file the index keeps: all segments, the tombstones, the manifest not counted."""
    records = [*manifest["files"].values(), *(f for s in manifest["segments"] for f in s["files"].values())]
    return sum(int(r["bytes"]) for r in records) + int((manifest.get("deleted") or {}).get("bytes", 0))


def unchanged(result: IndexResult, old: LoadedIndex, started: float) -> IndexResult:
    manifest = old.manifest
    result.index_type, result.factory, result.count = manifest["index_type"], manifest["factory"], old.count
    result.kept = old.count
    result.recall_at_10 = manifest.get("recall_at_10", 1.0)
    result.search_params = manifest.get("search_params") or {}
    result.index_bytes = index_bytes(manifest)
    result.segments = len(old.segments)
    result.seconds = time.perf_counter() - started
    return result


