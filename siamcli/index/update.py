"""An update that costs what changed: one new segment, one tombstone file, one manifest rename.

`siamcli index --append/--prune` on an index whose later segments stay small (build.py's
rewrite rule) never touches the files already there. In order:

  1. the new images are embedded into `segments/.NNNNNN.tmp/` (embeddings.npy, then its FAISS
     index, then items.sqlite), which is synced and renamed to `segments/NNNNNN` — when more
     than MAX_LATER_SEGMENTS would exist, the new segment also takes the live rows of the
     other later segments (small ones), so a query never searches more than a few;
  2. rows removed (files gone, or changed content) are written with the earlier tombstones to
     a new `deleted-GGGGGG.npy` (one (segment, row) pair each);
  3. manifest.json is replaced by one rename: the commit point;
  4. what the new manifest no longer names is listed as `retired` and deleted by the next
     update (a query that read the old manifest a moment ago may still open it); files no
     manifest ever named (left by an update killed before step 3) are deleted at once.

A kill before step 3 leaves the previous index exactly as it was (plus files nobody reads);
after it, the new one. The index lock (lock.py) keeps a second writer out throughout.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np

from siamcli.atomic import atomic_path, publish_directory
from siamcli.events import Events
from siamcli.faults import crash_point
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.changes import Changes, copy_vectors, new_rows, next_id
from siamcli.index.items import ITEMS_CSV
from siamcli.index.plan import plan_index
from siamcli.index.result import IndexResult, record_result, unchanged
from siamcli.index.segment import write_segment
from siamcli.index.store import LoadedIndex

MAX_LATER_SEGMENTS = 8  # past this, a new segment absorbs the other later segments


def add_segment(old: LoadedIndex, changes: Changes, embedder, galleries: list[str], seed: int, result: IndexResult,
                events: Events) -> None:
    """Apply `changes` to `old` in place: a new segment for new rows, tombstones for removed ones."""
    out, before = old.directory, old.record
    collect_garbage(out, old.manifest)  # what a killed update left: its segment number is about to be used again
    (out / ITEMS_CSV).unlink(missing_ok=True)  # the export would be stale: `--export-items` writes it again
    absorb = len(old.segments) - 1 >= MAX_LATER_SEGMENTS
    # Rows the new segment takes over (same id, same vector): the other later segments when there
    # are too many, and rows whose file was touched (their new size and time must be recorded).
    carried = [(ref, item) for ref, item in changes.kept if (absorb and ref[0] > 0) or ref in changes.refreshed]
    number = before.next_segment or 1
    record, outcome = None, None
    if changes.paths or carried:
        record, outcome = _write_new_segment(old, changes, carried, embedder, number, seed, galleries, events)
        if record is None and not changes.removed and galleries == before.galleries:
            result.skipped += outcome.failures  # only images that fail to decode were new: nothing changes
            unchanged(result, old, changes, time.perf_counter())
            return
    crash_point("index-segment-written")
    dropped = {old.segments[position].number for position in range(1, len(old.segments))} if absorb else set()
    segments = [s for s in before.segments if s.number not in dropped]
    if record is not None:
        segments.append(record.placed(number))
    generation = (before.generation or 1) + 1
    deleted = _write_tombstones(old, changes, dropped, generation)
    crash_point("index-tombstones-written")
    added = len(outcome.kept) if outcome else 0
    after = dataclasses.replace(before, segments=tuple(segments), deleted=deleted, generation=generation,
                                next_segment=number + (record is not None), next_id=next_id(old) + added, galleries=galleries,
                                count=sum(s.rows for s in [before.base, *segments]) - (deleted or {}).get("rows", 0),
                                updated=mf.now())
    after = dataclasses.replace(after, retired=sorted(_names(old.manifest) - _names(after.to_json())))
    mf.write_manifest(out, after)
    crash_point("index-manifest-written")
    manifest = after.to_json()
    collect_garbage(out, manifest)
    tombstones = deleted is not None and deleted.get("file") != (old.manifest.get("deleted") or {}).get("file")
    written = (sum(int(f["bytes"]) for f in record.files.values()) if record else 0) + (int(deleted["bytes"]) if tombstones else 0)
    record_result(result, manifest, changes, outcome, bytes_written=written + (out / mf.MANIFEST).stat().st_size)
    wrote = [what for what, done in (("a new segment", record is not None), ("a tombstone file", tombstones)) if done]
    result.update = f"{' and '.join(wrote) or 'the manifest only'}; existing files untouched"


def _write_new_segment(old: LoadedIndex, changes: Changes, carried, embedder, number: int, seed: int, galleries: list[str],
                       events: Events):
    """(record or None when no row decoded, embedding outcome): segments/NNNNNN with `carried`
    rows (absorbed later segments) and the new images."""
    folder = old.directory / mf.SEGMENTS_DIR / f".{number:06d}.tmp"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        with vector_file.VectorWriter(folder / mf.EMBEDDINGS_FILE, old.dim, capacity=len(carried) + len(changes.paths)) as writer:
            copy_vectors(old, carried, writer, events)
            outcome = embedder.embed(changes.paths, writer, changes.known_hashes) if changes.paths else None
        rows = len(carried) + (len(outcome.kept) if outcome else 0)
        if not rows:
            shutil.rmtree(folder, ignore_errors=True)
            return None, outcome
        crash_point("index-segment-embedded")

        def items():
            yield from (item for _, item in carried)
            if outcome:
                yield from new_rows(changes, outcome, next_id(old))

        plan = plan_index("auto", rows, old.dim)  # later segments are small: exact up to 50,000 rows
        record = write_segment(folder, items(), plan, rows, seed, galleries, events)
        publish_directory(folder, folder.with_name(f"{number:06d}"))
        return record, outcome
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _write_tombstones(old: LoadedIndex, changes: Changes, dropped: set[int], generation: int) -> dict | None:
    """The manifest's `deleted` record after this update (a new file when it changed), or None."""
    pairs = [(segment.number, int(row)) for segment in old.segments if segment.number not in dropped for row in segment.deleted]
    pairs += [(old.segments[position].number, row) for position, row in [*changes.removed, *changes.refreshed]
              if old.segments[position].number not in dropped]
    if not pairs:
        return None
    array = np.array(sorted(pairs), np.int64).reshape(-1, 2)
    previous = old.manifest.get("deleted")
    if previous and len(array) == previous.get("rows") and not changes.removed and not changes.refreshed and not dropped:
        return previous  # nothing removed now: the same file stands
    name = f"deleted-{generation:06d}.npy"
    with atomic_path(old.directory / name, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)
    return {"file": name, "rows": len(array), **mf.file_record(old.directory / name)}


def _names(manifest: dict) -> set[str]:
    """The segment folders and tombstone file a manifest names (the base is the index folder itself)."""
    names = {segment["name"] for segment in manifest["segments"]}
    if manifest.get("deleted"):
        names.add(manifest["deleted"]["file"])
    return names


def collect_garbage(out: Path, manifest: dict) -> None:
    """Delete what neither this manifest names nor it has just retired (see the module docstring)."""
    keep = _names(manifest) | set(manifest.get("retired") or [])
    candidates = list(out.glob("deleted-*.npy"))
    segments_dir = out / mf.SEGMENTS_DIR
    if segments_dir.is_dir():
        candidates += list(segments_dir.iterdir())
    for path in candidates:
        if path.relative_to(out).as_posix() in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
