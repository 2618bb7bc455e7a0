"""IndexResult: what `siamcli index` did, for the summary table and `--json`.

The counts add up. Every live row of the index before the command (`previous`) is exactly
one of: `changed` (same path, new content: re-embedded under a new id), `touched` (same
content, new size or time: same id and vector, moved to the new segment), `removed` (dropped
without a successor: its file gone and --prune given, or changed into a file that no longer
decodes), `gone` (its file is gone but no --prune: still indexed) or `kept` (untouched, as it
was). The index after it (`count`) holds `added` (new paths) + changed + touched + gone + kept.
(`--compact` keeps every live row, previous = kept = count; its `removed` counts the rows
already removed that the rewrite drops from disk.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.calibration import CALIBRATION_FILE, read_calibration
from siamcli.data.scan import Skipped
from siamcli.index.changes import Changes
from siamcli.index.hints import command
from siamcli.index.store import LoadedIndex

# Fewer images embedded than this: no images/s figure. Loading the pipeline and tracing the
# model take the first second or so, whatever the count: "6.8 images/s" for 5 images says nothing.
MIN_IMAGES_FOR_SPEED = 50


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
    previous: int = 0  # live rows before the command (the module docstring says how the counts add up)
    added: int = 0
    replaced: int = 0  # changed files re-embedded ("changed" in the summary; this key is older)
    touched: int = 0
    removed: int = 0
    gone: int = 0
    kept: int = 0  # rows of the previous index kept as they were
    skipped: list[Skipped] = field(default_factory=list)
    recall_at_10: float = 1.0
    search_params: dict = field(default_factory=dict)
    threshold: float | None = None  # the model run's reliable match threshold, for the summary (not stored)
    threshold_note: str = ""  # why there is none, and the command that measures one ("" when there is)
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
    update: str = ""  # what an update wrote ("a tombstone file; existing files untouched", "rewritten as one segment …")

    @property
    def images_per_second(self) -> float | None:
        return embedding_speed(self.embedded_images, self.embed_seconds)

    def summary(self) -> dict:
        data = {key: getattr(self, key) for key in (
            "mode", "written", "index_type", "factory", "count", "previous", "added", "replaced", "touched", "removed", "gone",
            "kept", "recall_at_10", "search_params", "threshold", "threshold_note", "index_bytes", "bytes_written", "segments",
            "hashed_images", "update")}
        speed = self.images_per_second
        return {
            "index_dir": str(self.index_dir), "gallery": self.gallery, "model": str(self.model_path), **data,
            "changed": self.replaced,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "rewrite_reason": self.rewrite_reason,
            "embedded_images": self.embedded_images,
            "embed_seconds": round(self.embed_seconds, 3),
            "first_batch_seconds": round(self.first_batch_seconds, 3),
            "embed_cpu_seconds": round(self.embed_cpu_seconds, 3),
            "images_per_second": None if speed is None else round(speed, 2),  # None: fewer than MIN_IMAGES_FOR_SPEED
            "seconds": round(self.seconds, 3),
        }


def embedding_speed(images: int, seconds: float) -> float | None:
    """Images embedded per second, or None for fewer than MIN_IMAGES_FOR_SPEED (it would measure the start-up)."""
    return images / seconds if images >= MIN_IMAGES_FOR_SPEED and seconds > 0 else None


def count_changes(result: IndexResult, changes: Changes, outcome) -> None:
    """previous, added, changed (`replaced`), touched, removed, gone, kept: as the module docstring adds them up."""
    result.replaced = sum(1 for p in (outcome.kept if outcome else []) if changes.paths[p] in changes.changed_paths)
    result.added = (len(outcome.kept) if outcome else 0) - result.replaced
    result.previous = len(changes.kept) + len(changes.removed)
    result.touched, result.gone = len(changes.refreshed), len(changes.gone)
    result.removed = len(changes.removed) - result.replaced
    result.kept = len(changes.kept) - result.touched - result.gone


def match_threshold(run_dir: Path, fingerprint: str) -> tuple[float | None, str]:
    """(the run's reliable match threshold, "") or (None, why there is none and the command that measures one)."""
    calibration, why = read_calibration(run_dir, fingerprint)
    if calibration is not None and calibration.reliable:
        return calibration.threshold, ""
    evaluate = command("--model", run_dir, program="evaluate")
    if calibration is not None:
        return None, (f"the run's threshold is not reliable: {calibration.reason}; to get one, evaluate on more identities the "
                      f"model never trained on: {command('DATA_DIR', '--model', run_dir, program='evaluate')}")
    if not (run_dir / CALIBRATION_FILE).is_file():
        return None, f"not calibrated: {evaluate} measures a threshold on the run's held-out identities"
    return None, f"{why} ({evaluate})"


def record_result(result: IndexResult, manifest: dict, changes: Changes, outcome, bytes_written: int) -> None:
    """Fill the result from the manifest now in place and what this command did."""
    result.written = True
    result.index_type, result.factory, result.count = manifest["index_type"], manifest["factory"], manifest["count"]
    result.recall_at_10, result.search_params = manifest["recall_at_10"], manifest["search_params"]
    count_changes(result, changes, outcome)
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


def unchanged(result: IndexResult, old: LoadedIndex, changes: Changes, started: float) -> IndexResult:
    """The result of an update that leaves the index as it was (nothing new, nothing removed)."""
    manifest = old.manifest
    result.index_type, result.factory, result.count = manifest["index_type"], manifest["factory"], old.count
    count_changes(result, changes, None)
    result.recall_at_10 = manifest.get("recall_at_10", 1.0)
    result.search_params = manifest.get("search_params") or {}
    result.index_bytes = index_bytes(manifest)
    result.segments = len(old.segments)
    result.seconds = time.perf_counter() - started
    return result


