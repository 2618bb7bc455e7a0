"""`siamcli index`: build an index over a gallery, or bring an existing one up to date.

Modes (an existing index is never replaced without one of them):

  * fresh build   no index at --out yet (or --force): embed every image of the gallery.
  * --append      add images not indexed yet. "Already indexed" means same absolute path and
                  same content (sha256 in hashes.csv). A file whose content changed is
                  re-embedded: its stale row is replaced by a new one under a new id. Every
                  other existing row keeps its id; an unchanged gallery adds nothing.
  * --prune       drop rows whose files are gone (a cheap existence check; changed files are
                  --append's business); combined with --append it is a full sync.
  * --force       rebuild from scratch; ids start again at 0.

Writing is atomic (`atomic_directory`): the new index is assembled under a temporary name
beside --out (embeddings stream straight into it) and swapped in only when complete, so a
build that fails, is interrupted or is killed leaves the previous index untouched.

When rows are only added and the index type stays the same, the existing FAISS index is
extended in place of a rebuild (keeping its measured search setting while the gallery stays
within 1.25× the size it was measured at); removing rows, changing type, or growing further
rebuilds from embeddings.npy and measures recall again. Nothing is ever re-embedded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamcli import __version__
from siamcli.atomic import atomic_directory, write_json
from siamcli.data.scan import Skipped, describe_skipped, require_folder, scan_folder
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.hashing import file_sha256
from siamcli.index import faiss_index
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.items import IndexItem, content_hash, write_items
from siamcli.index.lock import index_lock
from siamcli.index.search import run_threshold
from siamcli.index.store import LoadedIndex, check_model, is_index_dir, load_index
from siamcli.rundir import find_run

INDEX_DIR_NAME = "index"  # default --out: <model run>/index


@dataclass(frozen=True)
class IndexOptions:
    gallery: str  # folder of images (sub-folders = labels; images at the root get "")
    model: str | None = None  # run dir or model.keras; None → runs/latest
    out: str | None = None  # index dir; None → <run>/index
    index_type: str | None = None  # auto | flat | hnsw | ivf; None → auto (updates: as built)
    batch_size: int = 32  # images per forward pass
    append: bool = False  # add images not indexed yet
    prune: bool = False  # drop rows whose files are gone
    force: bool = False  # rebuild from scratch
    seed: int = 0  # IVF training sample and recall sample
    shard: str | None = None  # "I/N": embed only that share of the gallery into a partial (shard.build_part)
    moved: bool = False  # with append: the indexed gallery now lives at `gallery` (stored paths are rewritten)
    add_gallery: bool = False  # with append: `gallery` is a further folder; the index then spans several


@dataclass
class IndexResult:
    index_dir: Path
    gallery: str
    model_path: Path
    mode: str  # build | append | prune | append+prune
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
    embed_seconds: float = 0.0
    first_batch_seconds: float = 0.0  # part of embed_seconds: pipeline start and tracing the model
    embed_cpu_seconds: float = 0.0  # process CPU time (all threads) while embedding
    seconds: float = 0.0
    index_bytes: int = 0

    @property
    def images_per_second(self) -> float:
        return self.embedded_images / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> dict:
        return {
            "index_dir": str(self.index_dir),
            "gallery": self.gallery,
            "model": str(self.model_path),
            "mode": self.mode,
            "written": self.written,
            "index_type": self.index_type,
            "factory": self.factory,
            "count": self.count,
            "added": self.added,
            "replaced": self.replaced,
            "removed": self.removed,
            "kept": self.kept,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "recall_at_10": self.recall_at_10,
            "search_params": self.search_params,
            "threshold": self.threshold,
            "index_bytes": self.index_bytes,
            "embed_seconds": round(self.embed_seconds, 3),
            "first_batch_seconds": round(self.first_batch_seconds, 3),
            "embed_cpu_seconds": round(self.embed_cpu_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "seconds": round(self.seconds, 3),
        }


def default_index_dir(run_dir: Path) -> Path:
    return run_dir / INDEX_DIR_NAME


def build_index(options: IndexOptions, events: Events | None = None):
    """Build or update the index. (A shard's partial is `shard.build_part`'s work.)"""
    events = events or NO_EVENTS
    started = time.perf_counter()
    validate_options(options)
    if options.shard is not None:
        raise ValueError("options.shard is set: call siamcli.index.shard.build_part")
    run = find_run(options.model)
    out = Path(options.out) if options.out else default_index_dir(run.run_dir)
    with index_lock(out):
        return _build_locked(options, events, run, out, started)


def _build_locked(options: IndexOptions, events: Events, run, out: Path, started: float) -> IndexResult:
    require_folder(options.gallery)  # a wrong gallery path is the first thing to report
    existing = _existing(out, options, events)
    _warn_leftovers(out, events)

    scan, gallery_paths, gallery_labels = scan_gallery(options.gallery, events)

    from siamcli.models.embed import model_image_size
    from siamcli.models.embedding import load_embedding_model

    fingerprint = file_sha256(run.model)
    old: LoadedIndex | None = None
    galleries = [os.path.abspath(options.gallery)]
    if existing:
        events.stage(f"checking the index at {out}")
        old = load_index(out, full=True)
        check_model(old.manifest, run.model, fingerprint, out)
        galleries = _galleries_after(old, options)
    if not gallery_paths and old is None:
        raise UserError(f"{options.gallery} holds no images to index (JPEG, PNG, BMP, GIF, WebP, TIFF, PGM)")
    events.stage(f"loading model {run.model}")
    model = load_embedding_model(run.model)
    dim = int(model.output_shape[-1])
    image_size = model_image_size(model)
    if old is not None and old.dim != dim:
        raise UserError(f"index {out} holds {old.dim}-d vectors but model {run.model} makes {dim}-d ones; rebuild with --force")

    plan = _plan_changes(gallery_paths, gallery_labels, old, options, events)
    del gallery_paths, gallery_labels
    mode = "build" if old is None else "+".join(m for m, on in (("append", options.append), ("prune", options.prune)) if on)
    result = IndexResult(index_dir=out, gallery=str(options.gallery), model_path=run.model, mode=mode, written=False,
                         index_type="", factory="", count=0, skipped=list(scan.skipped), threshold=run_threshold(run.run_dir, fingerprint)[0])
    same_galleries = old is not None and galleries == _known_galleries(old)
    if same_galleries and not plan.paths and not plan.removed_rows:
        return _unchanged(result, old, started)  # leave the index (and its files' timestamps) as they are

    try:
        with atomic_directory(out) as tmp:
            embeddings_path = tmp / mf.EMBEDDINGS_FILE
            outcome, first_id = _write_vectors(embeddings_path, model, image_size, dim, old, plan, options, events)
            added = len(outcome.kept)
            count = len(plan.kept) + added
            if not count:
                raise UserError(f"no image of {options.gallery} could be indexed (none decoded); nothing was written")
            if same_galleries and not added and not plan.removed_rows:
                raise _NothingChanged  # only images that fail to decode were new: keep the index as it is
            index_plan = _resolve_plan(options, old, count, dim)
            index, index_plan, tuning, recall_count = _faiss_index(embeddings_path, index_plan, old, plan, added, options.seed, events)
            events.stage("writing the index")
            faiss_index.write_index(index, tmp / mf.INDEX_FILE)
            write_items(tmp, _rows(plan, outcome, first_id))
            manifest = index_manifest(
                tmp, fingerprint=fingerprint, model_path=run.model, dim=dim, image_size=image_size, plan=index_plan,
                tuning=tuning, recall_count=recall_count, count=count, next_id=first_id + added, gallery=options.gallery,
                galleries=galleries,
                created=old.manifest.get("created", mf.now()) if old is not None else mf.now(),
            )
            write_json(tmp / mf.MANIFEST, manifest)
    except _NothingChanged:
        result.skipped = list(scan.skipped) + outcome.failures
        return _unchanged(result, old, started)

    result.written = True
    result.index_type, result.factory, result.count = index_plan.index_type, index_plan.factory, count
    result.replaced = plan.changed_added(outcome.kept)
    result.added = added - result.replaced
    result.removed = len(plan.removed_rows)
    result.kept = len(plan.kept)
    result.skipped = list(scan.skipped) + outcome.failures
    result.recall_at_10, result.search_params = round(tuning.recall_at_10, 4), tuning.params
    result.embedded_images, result.embed_seconds = len(plan.paths), outcome.seconds
    result.first_batch_seconds, result.embed_cpu_seconds = outcome.first_batch_seconds, outcome.cpu_seconds
    result.index_bytes = manifest["files"][mf.INDEX_FILE]["bytes"]
    result.seconds = time.perf_counter() - started
    return result


def scan_gallery(gallery: str, events: Events):
    """(scan, absolute paths, labels) of the gallery's images in sorted order; skipped files reported.

    Parallel lists, not a list of pairs: at a million images every per-image object counts.
    """
    scan = scan_folder(gallery, labelled=False)
    if scan.skipped:
        events.message(describe_skipped(scan.skipped))
    paths = [os.path.abspath(item.path) for item in scan.items]
    labels = [item.label for item in scan.items]
    scan.items.clear()
    return scan, paths, labels


def index_manifest(tmp: Path, *, fingerprint: str, model_path: Path, dim: int, image_size: int, plan: faiss_index.IndexPlan,
                   tuning: faiss_index.Tuning, recall_count: int, count: int, next_id: int, gallery: str, created: str,
                   galleries: list[str] | None = None) -> dict:
    """manifest.json's content for the index files already written to `tmp` (keys: manifest.py)."""
    return {
        "format": mf.FORMAT,
        "model_fingerprint": fingerprint,
        "model_path": str(model_path),
        "embedding_dim": dim,
        "image_size": image_size,
        "metric": "inner_product",
        "factory": plan.factory,
        "index_type": plan.index_type,
        "chosen_by": plan.chosen_by,
        "search_params": tuning.params,
        "recall_at_10": round(tuning.recall_at_10, 4),
        "recall_sample": tuning.sample,
        "recall_count": recall_count,
        "count": count,
        "next_id": next_id,
        "gallery": os.path.abspath(gallery),
        "galleries": galleries or [os.path.abspath(gallery)],
        "siamcli_version": __version__,
        "faiss_version": faiss_index.faiss_module().__version__,
        "created": created,
        "updated": mf.now(),
        "files": {name: mf.file_record(tmp / name) for name in mf.DATA_FILES},
    }


def _next_id(old: LoadedIndex | None) -> int:
    if old is None:
        return 0
    return int(old.manifest.get("next_id", max((i.id for i in old.items), default=-1) + 1))


def _write_vectors(embeddings_path, model, image_size, dim, old, plan, options, events):
    """embeddings.npy: the kept rows of the old index, then the new images' vectors as they come.

    Returns the embedding outcome and the id of the first new row.
    """
    from siamcli.index.embedder import embed_to_file

    with vector_file.VectorWriter(embeddings_path, dim, capacity=len(plan.kept) + len(plan.paths)) as writer:
        if old is not None and plan.kept:
            _copy_rows(old.embeddings_path, plan.kept_rows, writer)
        events.stage("embedding", len(plan.paths))
        outcome = embed_to_file(model, plan.paths, writer, image_size, options.batch_size, events.advance, plan.known_hashes)
    if outcome.failures:
        events.message(describe_skipped(outcome.failures))
    return outcome, _next_id(old)


def _rows(plan, outcome, first_id: int):
    """Every row of the new index, in order: kept rows, then new ones (made one at a time)."""
    yield from plan.kept
    for offset, position in enumerate(outcome.kept):
        yield IndexItem(id=first_id + offset, path=plan.paths[position], label=plan.labels[position], sha256=outcome.sha256(position))


def _faiss_index(embeddings_path, index_plan, old, plan, added: int, seed: int, events):
    """(index, plan, tuning, recall_count): extend the old index, or build and tune a new one.

    The old index is extended when rows were only added, its type still fits, and the gallery
    has not grown past RETUNE_GROWTH × the size its search setting was measured at (an HNSW
    graph or IVF lists take new rows as well as old ones; the measured setting carries over).
    """
    count = len(plan.kept) + added
    if old is not None and not plan.removed_rows and old.manifest["factory"] == index_plan.factory:
        measured_at = int(old.manifest.get("recall_count") or old.count)
        if not index_plan.approximate or count <= faiss_index.RETUNE_GROWTH * measured_at:
            events.stage(f"adding {added} vectors to the existing {index_plan.factory} index")
            faiss_index.add_rows(old.index, embeddings_path, start_row=len(plan.kept))
            tuning = faiss_index.Tuning(recall_at_10=float(old.manifest.get("recall_at_10", 1.0)),
                                        params=dict(old.manifest.get("search_params") or {}),
                                        sample=int(old.manifest.get("recall_sample", 0)))
            return old.index, index_plan, tuning, measured_at if index_plan.approximate else count
    return new_faiss_index(embeddings_path, index_plan, count, seed, events)


def new_faiss_index(embeddings_path: Path, index_plan: faiss_index.IndexPlan, count: int, seed: int, events: Events):
    """(index, plan, tuning, recall_count) built from scratch over every row of the vectors file.

    `auto` falls back to an exact Flat index when the approximate one cannot reach the recall
    target; an explicitly requested type is kept, with a message giving its best recall.
    """
    events.stage(f"building {index_plan.factory} over {count} vectors")
    index, tuning = faiss_index.build_and_tune(embeddings_path, index_plan, seed, on_stage=events.stage)
    if not tuning.reached:
        if index_plan.chosen_by == "auto":
            events.message(f"{index_plan.factory} reached recall@10 {tuning.recall_at_10:.3f} < {faiss_index.RECALL_TARGET}; "
                           "building an exact Flat index instead")
            index_plan = faiss_index.FLAT
            index, tuning = faiss_index.build_and_tune(embeddings_path, index_plan)
        else:
            events.message(f"{index_plan.factory} reaches recall@10 {tuning.recall_at_10:.3f} at best, below "
                           f"{faiss_index.RECALL_TARGET}; use --index-type flat (exact) or auto")
    return index, index_plan, tuning, count


class _NothingChanged(Exception):
    """Raised inside the atomic build to drop it: the index would come out the same."""


def _unchanged(result: IndexResult, old: LoadedIndex, started: float) -> IndexResult:
    manifest = old.manifest
    result.index_type, result.factory, result.count = manifest["index_type"], manifest["factory"], old.count
    result.kept = old.count
    result.recall_at_10 = manifest.get("recall_at_10", 1.0)
    result.search_params = manifest.get("search_params") or {}
    result.index_bytes = manifest["files"][mf.INDEX_FILE]["bytes"]
    result.seconds = time.perf_counter() - started
    return result


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
        faiss_index.check_index_type(options.index_type)


def _existing(out: Path, options: IndexOptions, events: Events) -> bool:
    """Whether `out` holds an index to update; refuses to overwrite without the right option."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the index")
    if not out.is_dir():
        if options.append or options.prune:
            events.message(f"no index at {out} yet; building it")
        return False
    if is_index_dir(out):
        if options.force:
            return False
        if not (options.append or options.prune):
            raise UserError(
                f"{out} already holds an index; pass --append to add new images, --prune to drop entries whose files "
                "are gone, or --force to rebuild it"
            )
        return True
    if any(out.iterdir()) and not options.force:
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


@dataclass
class _Changes:
    kept: list[IndexItem]  # existing rows that stay, in their order
    kept_rows: np.ndarray  # their row numbers in the old index
    removed_rows: list[int]  # old rows dropped (gone, or changed)
    paths: list[str]  # images to embed and add …
    labels: list[str]  # … and their labels
    known_hashes: dict[int, str]  # position in paths → sha256 already computed
    changed_paths: set[str]  # paths re-embedded because their content changed

    def changed_added(self, kept_positions) -> int:
        return sum(1 for p in kept_positions if self.paths[p] in self.changed_paths)


def _plan_changes(paths: list[str], labels: list[str], old: LoadedIndex | None, options: IndexOptions, events: Events) -> _Changes:
    if old is None:
        return _Changes([], np.zeros(0, np.int64), [], paths, labels, {}, set())
    events.stage("comparing the gallery with the index (content hashes)")
    by_path = {item.path: row for row, item in enumerate(old.items)}
    drop: set[int] = set()
    new_paths: list[str] = []
    new_labels: list[str] = []
    known: dict[int, str] = {}
    changed: set[str] = set()
    if options.append:
        for path, label in zip(paths, labels):
            row = by_path.get(path)
            if row is not None:
                digest = content_hash(path)
                if digest == old.items[row].sha256:
                    continue  # already indexed: same path, same content
                drop.add(row)  # same path, new content: the indexed image no longer exists
                changed.add(path)
                known[len(new_paths)] = digest
            new_paths.append(path)
            new_labels.append(label)
    if options.prune:
        drop.update(row for row, item in enumerate(old.items) if not os.path.isfile(item.path))
    gone = [item.path for item in old.items if not os.path.isfile(item.path)] if not options.prune else []
    if gone:
        events.message(f"{len(gone)} indexed file{'s are' if len(gone) > 1 else ' is'} gone (e.g. {gone[0]}); "
                       f"`siamcli index {options.gallery} --prune` drops {'them' if len(gone) > 1 else 'it'}")
    kept_rows = np.array([row for row in range(old.count) if row not in drop], np.int64)
    kept = [old.items[row] for row in kept_rows]
    return _Changes(kept, kept_rows, sorted(drop), new_paths, new_labels, known, changed)


def _galleries_after(old: LoadedIndex, options: IndexOptions) -> list[str]:
    """The gallery folders the updated index will span. --append from a folder the index does not
    know is refused (it would index the same photos twice) unless the user says the gallery moved
    (stored paths are rewritten, in `old.items`) or that the folder is a further gallery."""
    here = os.path.abspath(options.gallery)
    known = _known_galleries(old) or [here]
    if here in known or not options.append:
        return known
    if options.add_gallery:
        return known + [here]
    if options.moved:
        if len(known) != 1:
            raise UserError(f"index {old.directory} spans {len(known)} galleries; --moved rewrites one: rebuild with --force instead")
        prefix = os.path.join(known[0], "")
        old.items[:] = [dataclasses.replace(item, path=os.path.join(here, item.path[len(prefix):]))
                        if item.path.startswith(prefix) else item for item in old.items]
        return [here]
    raise UserError(f"index {old.directory} was built from {', '.join(known)}, not {here}: pass --moved if the gallery "
                    "moved there, --add-gallery to index this folder too, or --force to rebuild from it alone")


def _known_galleries(old: LoadedIndex) -> list[str]:
    manifest = old.manifest
    return list(manifest.get("galleries") or ([manifest["gallery"]] if manifest.get("gallery") else []))


def _copy_rows(source: Path, rows: np.ndarray, writer: vector_file.VectorWriter) -> None:
    wanted = np.zeros(vector_file.read_shape(source)[0][0], bool)
    wanted[rows] = True
    for first, chunk in vector_file.iter_chunks(source):
        writer.write(chunk[wanted[first:first + len(chunk)]])


def _resolve_plan(options: IndexOptions, old: LoadedIndex | None, count: int, dim: int) -> faiss_index.IndexPlan:
    """--index-type, or for an update without it: the type the index was built with (auto stays auto)."""
    index_type = options.index_type
    if index_type is None:
        if old is not None and old.manifest.get("chosen_by") == "user":
            index_type = old.manifest["index_type"]
        else:
            index_type = "auto"
    return faiss_index.plan_index(index_type, count, dim)
