"""`siamcli index --compact` and `--export-items`: whole-index work that embeds nothing.

Compaction rewrites the index as one segment holding only its live rows (the later segments
merged in, tombstoned rows dropped), from the stored vectors — no image is read and no model
is loaded — with the index type chosen again for the new size (or `--index-type`), tuned and
swapped in atomically like a full build. Ids, paths, hashes and times are kept as they are.

`--export-items` writes `<index>/items.csv` (id, path, label) for people and pandas: the
live rows as they are now. Full builds write it too; updates remove it rather than leave a
stale one.
"""

from __future__ import annotations

import time
from pathlib import Path

from siamcli.events import NO_EVENTS, Events
from siamcli.index.build import IndexOptions, rewrite, validate_options, writing
from siamcli.index.changes import Changes
from siamcli.index.items import ITEMS_CSV, write_items_csv
from siamcli.index.result import IndexResult, match_threshold
from siamcli.index.store import load_index, naming_the_rebuild


def compact_index(directory: Path, index_type: str | None = None, seed: int = 0, events: Events = NO_EVENTS) -> IndexResult:
    """Rewrite the index at `directory` as one segment of its live rows."""
    started = time.perf_counter()
    with writing(directory), naming_the_rebuild(directory):
        old = load_index(directory, full=True)
        manifest = old.manifest
        options = IndexOptions(gallery=manifest.get("gallery") or str(directory), index_type=index_type, seed=seed)
        validate_options(options)
        model_path = Path(manifest["model_path"])
        threshold, note = match_threshold(model_path.parent, manifest["model_fingerprint"])
        result = IndexResult(index_dir=directory, gallery=options.gallery, model_path=model_path, mode="compact",
                             written=False, index_type="", factory="", count=0, threshold=threshold, threshold_note=note)
        changes = Changes(kept=list(old.entries), removed=[], paths=[], labels=[], known_hashes={}, changed_paths=set())
        galleries = list(manifest.get("galleries") or [options.gallery])
        rewrite(directory, old, changes, None, galleries, options, result, events,
                fingerprint=manifest["model_fingerprint"], model_path=model_path)
        result.removed = sum(len(segment.deleted) for segment in old.segments)
    result.seconds = time.perf_counter() - started
    return result


def export_items(directory: Path) -> Path:
    """Write `<index>/items.csv` for the live rows (under the index lock: no update runs meanwhile)."""
    with writing(directory):
        loaded = load_index(directory, full=True)
        write_items_csv(directory / ITEMS_CSV, loaded.items)
    return directory / ITEMS_CSV
