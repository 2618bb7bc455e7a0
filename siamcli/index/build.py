"""`siamcli index`: build an index over a gallery, or bring an existing one up to date.

Modes (an existing index is never replaced without one of them):

  * fresh build   no index at --out yet (or --force): embed every image of the gallery.
  * --append      add images not indexed yet. What is indexed is decided as git's index does:
                  a file with the path, size and modification time recorded when it was
                  embedded is not read at all; one whose size or time changed is hashed, and
                  re-embedded only if its content (sha256) changed: its old row is removed and
                  the new one gets a new id. Every other row keeps its id.
  * --prune       drop rows whose files are gone (a cheap existence check); refused where
                  there is no index (a build there would surprise whoever ran a prune).
  * --compact     rewrite the index as one segment without its removed rows (compact.py).
  * --force       rebuild from scratch; ids start again at 0.

An update costs what changed (update.py): new vectors go into a new segment, removed rows
into a tombstone file, and the manifest that lists them is swapped in by one rename. The index
is rewritten as one segment (atomic_directory: built beside --out, swapped in when complete)
only by a first build, --force, --compact, --moved, a change of --index-type, or when later
segments would hold more than COMPACT_SHARE of the rows or tombstones would be more than
COMPACT_SHARE of them (then the update says so). Nothing is ever re-embedded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from siamcli.atomic import atomic_directory
from siamcli.data.scan import describe_skipped, require_folder, scan_folder
from siamcli.errors import Interrupted, UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.faults import crash_point
from siamcli.hashing import file_sha256
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.changes import Changes, copy_vectors, new_rows, next_id, plan_changes
from siamcli.index.faiss_io import faiss_module
from siamcli.index.hints import command
from siamcli.index.items import ITEMS_CSV, IndexItem, write_items_csv
from siamcli.index.locate import default_index_dir  # (cli/index_cmd.py imports it from here)
from siamcli.index.lock import index_lock
from siamcli.index.plan import IndexPlan, check_index_type, plan_index
from siamcli.index.result import IndexResult, match_threshold, record_result, unchanged
from siamcli.index.segment import write_segment
from siamcli.index.store import (
    LoadedIndex,
    check_model,
    galleries_of,
    is_index_dir,
    load_index,
    missing_index_message,
    naming_the_rebuild,
    verify_all_files,
)
from siamcli.index.update import add_segment
from siamcli.rundir import find_run

COMPACT_SHARE = 0.25  # later segments (or tombstones) past this share of the rows: the update rewrites the index


@dataclass(frozen=True)
class IndexOptions:
    gallery: str  # folder of images (sub-folders = labels; images at the root get "")
    model: str | None = None  # run dir or model.keras; None → runs/latest
    out: str | None = None  # index dir; None → <run>/index
    index_type: str | None = None  # auto | flat | hnsw | ivf | ivfpq; None → auto (updates: as built)
    batch_size: int = 32  # images per forward pass
    append: bool = False  # add images not indexed yet
    prune: bool = False  # drop rows whose files are gone
    force: bool = False  # rebuild from scratch
    seed: int = 0  # IVF training sample and recall sample
    shard: str | None = None  # "I/N": embed only that share of the gallery into a partial (shard.build_part)
    moved: bool = False  # with append: the indexed gallery now lives at `gallery` (stored paths are rewritten)
    add_gallery: bool = False  # with append: `gallery` is a further folder; the index then spans several


def build_index(options: IndexOptions, events: Events | None = None):
    """Build or update the index. (A shard's partial is `shard.build_part`'s work.)"""
    events = events or NO_EVENTS
    started = time.perf_counter()
    validate_options(options)
    if options.shard is not None:
        raise UserError(f"shard {options.shard!r} is set: a shard's partial index is written by siamcli.index.shard.build_part "
                        "(`siamcli index GALLERY_DIR --shard I/N`), not by build_index")
    require_folder(options.gallery)  # a wrong gallery path is the first thing to report
    run = find_run(options.model)
    out = Path(options.out) if options.out else default_index_dir(run.run_dir)
    with writing(out), naming_the_rebuild(out, model=run.model, gallery=options.gallery):
        return _build_locked(options, events, run, out, started)


@contextlib.contextmanager
def writing(out: Path, fresh: str = "nothing was written; the gallery is unchanged") -> Iterator[None]:
    """Hold the index lock on `out`; Ctrl-C meanwhile ends in Interrupted saying what state `out` is
    in (`fresh`: what to say when there was no index and still is none)."""
    with index_lock(out):
        before = _manifest_bytes(out)
        try:
            yield
        except KeyboardInterrupt:
            after = _manifest_bytes(out)
            if after is not None and after != before:
                raise Interrupted(f"interrupted just after {out} was written; the index there is complete") from None
            if before is None:
                raise Interrupted(f"interrupted: {fresh}; run the same command again to write {out}") from None
            raise Interrupted(f"interrupted: the index is as it was before this update ({out}); "
                              "run the same command again to apply it") from None


def _manifest_bytes(out: Path) -> bytes | None:
    try:
        return (out / mf.MANIFEST).read_bytes()
    except OSError:
        return None


def _build_locked(options: IndexOptions, events: Events, run, out: Path, started: float) -> IndexResult:
    existing = _existing(out, options, run.run_dir)
    _warn_leftovers(out, events)
    scan, gallery_paths, gallery_labels = scan_gallery(options.gallery)
    fingerprint = file_sha256(run.model)
    old: LoadedIndex | None = None
    galleries, moved = [os.path.abspath(options.gallery)], False
    if existing:
        events.stage(f"checking the index at {out}")
        old = load_index(out, full=True)
        check_model(old.manifest, run.model, fingerprint, out)
        galleries, moved = _galleries_after(old, options)
    elif options.append:
        events.message(f"no index at {out} yet; building it")
    if not gallery_paths and old is None:
        raise UserError(f"{options.gallery} holds no images to index (JPEG, PNG, BMP, GIF, WebP, TIFF, PGM)")
    changes = plan_changes(gallery_paths, gallery_labels, old, options, events)
    del gallery_paths, gallery_labels
    if changes.gone:
        _warn_gone(changes.gone, options, run.run_dir, out, events)
    mode = "build" if old is None else "+".join(m for m, on in (("append", options.append), ("prune", options.prune)) if on)
    threshold, note = match_threshold(run.run_dir, fingerprint)
    result = IndexResult(index_dir=out, gallery=str(options.gallery), model_path=run.model, mode=mode, written=False,
                         index_type="", factory="", count=0, skipped=list(scan.skipped), hashed_images=changes.hashed,
                         threshold=threshold, threshold_note=note)
    same_galleries = old is not None and galleries == _known_galleries(old)
    if same_galleries and not moved and not changes.any:
        unchanged(result, old, changes, started)  # leave the index (and its files' timestamps) as they are
    else:
        embedder = _Embedder(run.model, fingerprint, old, options, events) if changes.paths or old is None else None
        result.rewrite_reason = rewrite_reason(old, changes, options, moved) if old is not None else ""
        if old is not None and not result.rewrite_reason:
            add_segment(old, changes, embedder, galleries, options.seed, result, events)
        else:
            if old is not None:
                events.message(f"rewriting the index as one segment: {result.rewrite_reason}")
            rewrite(out, old, changes, embedder, galleries, options, result, events, fingerprint=fingerprint, model_path=run.model)
    if result.skipped:
        events.message(describe_skipped(result.skipped))  # one warning for the scan's and the decoder's
    result.seconds = time.perf_counter() - started
    return result


def _warn_gone(gone: list[str], options: IndexOptions, run_dir: Path, out: Path, events: Events) -> None:
    prune = command(options.gallery, "--model", run_dir, "--out", out, "--prune")
    many = len(gone) > 1
    events.message(f"{len(gone)} indexed file{'s are' if many else ' is'} gone (e.g. {gone[0]}); "
                   f"{prune} drops {'them' if many else 'it'}")


class _Embedder:
    """Loads the model the first time images are to be embedded (a prune never loads TensorFlow)."""

    def __init__(self, model_path: Path, fingerprint: str, old: LoadedIndex | None, options: IndexOptions, events: Events):
        self.model_path, self.fingerprint, self.old, self.options, self.events = model_path, fingerprint, old, options, events
        self.model, self.dim, self.image_size = None, None, None

    def load(self) -> None:
        self.events.stage(f"loading model {self.model_path}")  # first: importing TensorFlow is most of it
        from siamcli.models.run_model import load_run_model

        loaded = load_run_model(self.model_path, sha256=self.fingerprint)
        self.model, self.dim, self.image_size = loaded.model, loaded.dim, loaded.image_size
        if self.old is not None:
            loaded.check_matches(self.old.directory, self.old.dim)

    def embed(self, paths: list[str], writer: vector_file.VectorWriter, known: dict[int, str]):
        """Embed `paths` into `writer`; the outcome (kept positions, hashes, sizes, times)."""
        from siamcli.index.embedder import embed_to_file

        if self.model is None:
            self.load()
        self.events.stage("embedding", len(paths))
        return embed_to_file(self.model, paths, writer, self.image_size, self.options.batch_size, self.events.advance, known)


def scan_gallery(gallery: str):
    """(scan, absolute paths, labels) of the gallery's images in sorted order. The skipped files
    (scan.skipped) are the caller's to name, with those that fail to decode, in one warning.

    Parallel lists, not a list of pairs: at a million images every per-image object counts.
    """
    scan = scan_folder(gallery, labelled=False)
    paths = [os.path.abspath(item.path) for item in scan.items]
    labels = [item.label for item in scan.items]
    scan.items.clear()
    return scan, paths, labels


def rewrite(out: Path, old: LoadedIndex | None, changes: Changes, embedder, galleries: list[str], options: IndexOptions,
            result: IndexResult, events: Events, *, fingerprint: str, model_path: Path, index_type: str | None = None) -> None:
    """Write the whole index as one segment (the base) in a new folder, then swap it in."""
    if old is not None:
        events.stage("verifying the files to copy")
        verify_all_files(old)  # every byte is read anyway: bit rot must not be copied
    first_id = next_id(old)
    with atomic_directory(out) as tmp:
        vectors_path = tmp / mf.EMBEDDINGS_FILE
        dim = old.dim if old is not None else None
        if dim is None:
            embedder.load()
            dim = embedder.dim
        with vector_file.VectorWriter(vectors_path, dim, capacity=len(changes.kept) + len(changes.paths)) as writer:
            copy_vectors(old, changes.kept, writer, events)
            outcome = embedder.embed(changes.paths, writer, changes.known_hashes) if changes.paths else None
        added = len(outcome.kept) if outcome else 0
        count = len(changes.kept) + added
        if not count:
            raise UserError(f"no image of {options.gallery} could be indexed, nothing was written: "
                            f"{describe_skipped(result.skipped + (outcome.failures if outcome else []))}")

        def rows():
            yield from (item for _, item in changes.kept)
            if outcome:
                yield from new_rows(changes, outcome, first_id)

        plan = plan_index(index_type or _index_type(options, old), count, dim)
        image_size = old.record.image_size if old is not None else embedder.image_size
        created = (old.record.created or mf.now()) if old is not None else mf.now()
        manifest = write_one_segment(tmp, rows, plan, options.seed, galleries, events, fingerprint=fingerprint,
                                     model_path=model_path, dim=dim, image_size=image_size, count=count,
                                     next_id=first_id + added, gallery=options.gallery, created=created)
        written = sum(path.stat().st_size for path in tmp.rglob("*") if path.is_file())
    record_result(result, manifest.to_json(), changes, outcome, bytes_written=written)
    if old is not None:
        result.update = "rewritten as one segment" + (f" ({result.rewrite_reason})" if result.rewrite_reason else "")


def write_one_segment(tmp: Path, rows: Callable[[], Iterable[IndexItem]], plan: IndexPlan, seed: int, galleries: list[str],
                      events: Events, *, count: int, **facts) -> mf.IndexManifest:
    """Finish a whole index that is one segment in the new folder `tmp`, whose embeddings.npy
    (`count` vectors) is written: the segment, items.csv and the manifest. `rows()` yields the
    items in row order (called twice). `facts`: IndexManifest.single_segment's. The one way a
    rewrite (`rewrite`) and a merge of shards (`shard.merge_parts`) end."""
    record = write_segment(tmp, rows(), plan, count, seed, galleries, events)
    write_items_csv(tmp / ITEMS_CSV, rows())
    manifest = mf.IndexManifest.single_segment(record, count=count, galleries=galleries,
                                               faiss_version=faiss_module().__version__, **facts)
    mf.write_manifest(tmp, manifest)
    crash_point("index-rewrite-written")
    return manifest


def validate_options(options: IndexOptions) -> None:
    if options.force and (options.append or options.prune):
        raise UserError("--force rebuilds the index from scratch; it cannot be combined with --append or --prune")
    if options.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {options.batch_size}")
    if (options.moved or options.add_gallery) and not options.append:
        raise UserError("--moved and --add-gallery change how --append treats GALLERY_DIR; pass --append too")
    if options.moved and options.add_gallery:
        raise UserError("--moved (the gallery changed folder) and --add-gallery (a further folder) exclude each other; choose one")
    if options.index_type is not None:  # None: an update keeps its type, a new index is auto
        check_index_type(options.index_type)


def _existing(out: Path, options: IndexOptions, run_dir: Path) -> bool:
    """Whether `out` holds an index to update; refuses to overwrite without the right option, and
    to prune where there is nothing to prune (a fresh build there would be a surprise)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the index")
    if is_index_dir(out):
        if options.force:
            return False
        if not (options.append or options.prune):
            raise UserError(
                f"{out} already holds an index; pass --append to add new images, --prune to drop entries whose files "
                "are gone, or --force to rebuild it"
            )
        return True
    if options.prune:
        raise UserError(missing_index_message(out, options.gallery, run_dir, purpose=" to prune"))
    if out.is_dir() and any(out.iterdir()) and not options.force:
        raise UserError(f"{out} exists and is not a siamcli index; choose another --out or pass --force to replace it")
    return False


def _warn_leftovers(out: Path, events: Events) -> None:
    if not out.parent.is_dir():
        return
    leftovers = sorted(out.parent.glob(f".{out.name}.*.tmp"))
    if leftovers:
        events.message(
            f"{len(leftovers)} temporary folder(s) left by interrupted builds (or one running now): "
            f"{', '.join(str(p) for p in leftovers[:3])}; delete them to free the space"
        )


def rewrite_reason(old: LoadedIndex | None, changes: Changes, options: IndexOptions, moved: bool) -> str:
    """Why this update must rewrite the index as one segment ("" when a new segment will do)."""
    if old is None:
        return "new index"
    if moved:
        return "--moved rewrites every stored path"
    wanted = options.index_type
    if wanted is not None and wanted != "auto" and wanted != old.manifest["index_type"]:
        return f"--index-type {wanted} differs from the index's {old.manifest['index_type']}"
    removed_base = sum(1 for position, _ in changes.removed if position == 0)
    base_live = old.segments[0].live - removed_base
    later = sum(1 for (position, _), _ in changes.kept if position > 0) + len(changes.paths)
    if later > COMPACT_SHARE * max(base_live, 1):
        return f"the later segments would hold {later} rows, more than {COMPACT_SHARE:.0%} of the base's {base_live}"
    rows = sum(segment.rows for segment in old.segments) + len(changes.paths)
    dead = sum(len(segment.deleted) for segment in old.segments) + len(changes.removed)
    if dead > COMPACT_SHARE * rows:
        return f"{dead} of {rows} rows would be removed ones, more than {COMPACT_SHARE:.0%}"
    return ""


def _galleries_after(old: LoadedIndex, options: IndexOptions) -> tuple[list[str], bool]:
    """(the gallery folders the updated index will span, whether stored paths were rewritten).

    --append from a folder the index does not know is refused (it would index the same photos
    twice) unless the user says the gallery moved (stored paths are rewritten, in `old.entries`,
    and the index is rewritten) or that the folder is a further gallery.
    """
    here = os.path.abspath(options.gallery)
    known = _known_galleries(old) or [here]
    if here in known or not options.append:
        return known, False
    if options.add_gallery:
        return known + [here], False
    if options.moved:
        if len(known) != 1:
            raise UserError(f"index {old.directory} spans {len(known)} galleries; --moved rewrites one: run the same command "
                            "with --force in place of --append --moved to rebuild it from GALLERY_DIR alone")
        prefix = os.path.join(known[0], "")
        old.entries[:] = [(ref, dataclasses.replace(item, path=os.path.join(here, item.path[len(prefix):])))
                          if item.path.startswith(prefix) else (ref, item) for ref, item in old.entries]
        return [here], True
    raise UserError(f"index {old.directory} was built from {', '.join(known)}, not {here}: pass --moved if the gallery "
                    "moved there, --add-gallery to index this folder too, or --force to rebuild from it alone")


def _known_galleries(old: LoadedIndex) -> list[str]:
    return galleries_of(old.manifest)


def _index_type(options: IndexOptions, old: LoadedIndex | None) -> str:
    """--index-type, or for an update without it: the type the index was built with (auto stays auto)."""
    if options.index_type is not None:
        return options.index_type
    if old is not None and old.manifest.get("chosen_by") == "user":
        return old.manifest["index_type"]
    return "auto"
