"""Sharded gallery embedding: `siamcli index GALLERY --shard I/N` and `siamcli index --merge PART...`.

Embedding is what costs (≈ 20 images/s per CPU machine with ResNet50 at 224 px); building the
FAISS index over the vectors is cheap beside it. So N machines each embed a deterministic
1/N of the gallery into a *partial* (vectors, items with content hashes; no FAISS index), and one
merge concatenates the partials and builds the index once, exactly as a single-process build
would have:

  * Every shard scans the whole gallery (sorted, so every machine sees the same list) and
    records a digest of that listing; merge refuses partials made from different listings
    (files added or removed between shard runs) or with a shard missing or given twice.
  * Shard I of N takes a contiguous run of whole *batches* (`--batch-size` images each), not
    just of images: every image then goes through the model in exactly the batch it would be
    in during a single build, so its vector is bit-identical by construction, not merely close.
    (On CPU, TensorFlow's kernels happened to give the same bits even for image-level cuts in
    our tests; a batch of another shape may take another kernel path on other hardware, and the
    guarantee should not depend on it.)
  * Merge renumbers ids 0, 1, 2… in gallery order (images that failed to decode take no id,
    as in a single build), and builds the FAISS index with the same rule and seed.

The result — ids, vectors, items.sqlite, items.csv, index.faiss for a given type — is what
`siamcli index GALLERY` writes on one machine (tests/test_index_shard.py checks it). Stored
paths are absolute, so the N machines must see the gallery at the same path.

A partial directory holds embeddings.npy, items.sqlite (ids local to the partial) and
manifest.json with "format": "siamcli-index-part/1" and the keys below; `siamcli query`
refuses it with a message that says to merge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from siamcli.atomic import atomic_directory
from siamcli.data.scan import Skipped, describe_skipped, require_folder
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.hashing import file_sha256
from siamcli.index import build
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.hints import REBUILD, command
from siamcli.index.items import IndexItem, read_items, write_items
from siamcli.index.locate import default_index_dir, default_part_dir
from siamcli.index.plan import check_index_type, plan_index
from siamcli.index.result import IndexResult, embedding_speed, index_bytes, match_threshold
from siamcli.index.store import naming_the_rebuild
from siamcli.rundir import find_run

PART_FILES = (mf.ITEMS_FILE, mf.EMBEDDINGS_FILE)
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" → (I, N), 1 ≤ I ≤ N."""
    match = _SHARD.match(text or "")
    if not match:
        raise UserError(f"--shard takes I/N (this machine's share I of N, e.g. 1/4), got {text!r}")
    shard, shards = int(match.group(1)), int(match.group(2))
    if shards < 1 or not 1 <= shard <= shards:
        raise UserError(f"--shard {text}: I must be between 1 and N (the shards are 1/{max(shards, 1)} … {max(shards, 1)}/{max(shards, 1)})")
    return shard, shards


def shard_range(count: int, batch_size: int, shard: int, shards: int) -> tuple[int, int]:
    """[start, stop) of the gallery list that shard I of N embeds: whole batches, as even as they go."""
    batches = -(-count // batch_size)
    first = (shard - 1) * batches // shards
    last = shard * batches // shards
    return min(first * batch_size, count), min(last * batch_size, count)


def listing_digest(paths: list[str], labels: list[str]) -> str:
    """sha256 of the gallery listing (paths and labels, in scan order): shards must agree on it."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        digest.update(os.fsencode(path) + b"\t" + os.fsencode(label) + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- one shard


@dataclass
class PartResult:
    index_dir: Path
    gallery: str
    model_path: Path
    shard: int
    shards: int
    gallery_count: int  # images in the whole gallery listing
    start: int  # this shard's slice of the listing: [start, stop)
    stop: int
    count: int  # vectors written (images of the slice that decoded)
    skipped: list[Skipped]
    embed_seconds: float
    seconds: float

    @property
    def merge_command(self) -> str:
        """The merge to run once every shard is done (the default --out: the model run's index)."""
        return command("--merge", "PART_1", "...", f"PART_{self.shards}", "--model", self.model_path.parent)

    def summary(self) -> dict:
        speed = embedding_speed(self.stop - self.start, self.embed_seconds)
        return {
            "index_dir": str(self.index_dir),
            "gallery": self.gallery,
            "model": str(self.model_path),
            "mode": "shard",
            "shard": f"{self.shard}/{self.shards}",
            "gallery_count": self.gallery_count,
            "range": [self.start, self.stop],
            "count": self.count,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "embed_seconds": round(self.embed_seconds, 3),
            "images_per_second": None if speed is None else round(speed, 2),
            "seconds": round(self.seconds, 3),
        }


def build_part(options: build.IndexOptions, events: Events = NO_EVENTS) -> PartResult:
    """Embed shard I/N of the gallery into a partial (options: build.IndexOptions with .shard set)."""
    started = time.perf_counter()
    build.validate_options(options)
    shard, shards = parse_shard(options.shard)
    if options.append or options.prune:
        raise UserError("--shard writes a new partial index; it cannot be combined with --append or --prune")
    require_folder(options.gallery)
    run = find_run(options.model)
    if options.index_type is not None:
        merge = command("--merge", "PART_1", "...", f"PART_{shards}", "--model", run.run_dir, "--index-type", options.index_type)
        raise UserError(f"a partial holds vectors only; pass --index-type to the merge that builds the index: {merge}")
    out = Path(options.out) if options.out else default_part_dir(run.run_dir, shard, shards)
    with build.writing(out), naming_the_rebuild(out, model=run.model, gallery=options.gallery):
        _refuse_existing(out, options.force, what="a partial index")
        scan, paths, labels = build.scan_gallery(options.gallery)
        if not paths:
            raise UserError(f"{options.gallery} holds no images to index (JPEG, PNG, BMP, GIF, WebP, TIFF, PGM)")
        listing, total = listing_digest(paths, labels), len(paths)
        start, stop = shard_range(total, options.batch_size, shard, shards)

        from siamcli.index.embedder import embed_to_file
        from siamcli.models.run_model import load_run_model

        events.stage(f"loading model {run.model}")
        loaded = load_run_model(run)
        model, dim, image_size, fingerprint = loaded.model, loaded.dim, loaded.image_size, loaded.sha256
        part_paths, part_labels = paths[start:stop], labels[start:stop]
        del paths, labels
        with atomic_directory(out) as tmp:
            with vector_file.VectorWriter(tmp / mf.EMBEDDINGS_FILE, dim, capacity=len(part_paths)) as writer:
                events.stage("embedding", len(part_paths))
                outcome = embed_to_file(model, part_paths, writer, image_size, options.batch_size, events.advance)
            if scan.skipped or outcome.failures:
                events.message(describe_skipped(list(scan.skipped) + outcome.failures))  # one warning for both
            rows = (IndexItem(id=row, path=part_paths[p], label=part_labels[p], sha256=outcome.sha256(p),
                              size=int(outcome.sizes[p]), mtime_ns=int(outcome.mtimes[p])) for row, p in enumerate(outcome.kept))
            write_items(tmp / mf.ITEMS_FILE, rows, [os.path.abspath(options.gallery)])
            mf.write_manifest(tmp, mf.PartManifest(
                shard=shard, shards=shards, gallery=os.path.abspath(options.gallery), gallery_count=total,
                listing_sha256=listing, batch_size=options.batch_size, range=[start, stop], count=len(outcome.kept),
                model_fingerprint=fingerprint, model_path=str(run.model), embedding_dim=dim, image_size=image_size,
                scan_skipped=[{"path": s.path, "reason": s.reason} for s in scan.skipped],
                decode_failures=[{"path": s.path, "reason": s.reason} for s in outcome.failures],
                files={name: mf.file_record(tmp / name) for name in PART_FILES},
            ))
    return PartResult(index_dir=out, gallery=str(options.gallery), model_path=run.model, shard=shard, shards=shards,
                      gallery_count=total, start=start, stop=stop, count=len(outcome.kept),
                      skipped=list(scan.skipped) + outcome.failures, embed_seconds=outcome.seconds,
                      seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- merging the partials


@dataclass(frozen=True)
class MergeOptions:
    partials: tuple[str, ...]  # the folders written by `--shard I/N`, one per shard, any order
    model: str | None = None  # run dir or model.keras (default runs/latest): must be the partials' model
    out: str | None = None  # index dir; None → <run>/index
    index_type: str | None = None  # auto | flat | hnsw | ivf …; None → auto
    force: bool = False  # replace an existing --out
    seed: int = 0  # IVF training sample and recall sample, as in a single build


@dataclass
class _Part:
    directory: Path
    manifest: mf.PartManifest

    @property
    def shard(self) -> int:
        return self.manifest.shard


def merge_parts(options: MergeOptions, events: Events = NO_EVENTS):
    """Combine the partials of all N shards into one index (an IndexResult), as one build would."""

    started = time.perf_counter()
    if not options.partials:
        raise UserError(f"--merge needs the partial indexes to combine: "
                        f"{command('--merge', 'PART_1', '...', 'PART_N', '--model', options.model or 'RUN')}")
    if options.index_type is not None:  # None: auto
        check_index_type(options.index_type)
    parts = _read_parts(options.partials)
    first = parts[0].manifest
    run = find_run(options.model)
    fingerprint = file_sha256(run.model)
    if fingerprint != first.model_fingerprint:
        raise UserError(
            f"the partials were embedded with {first.model_path} (fingerprint {first.model_fingerprint[:12]}…), "
            f"not with {run.model} ({fingerprint[:12]}…); pass that model's run with --model"
        )
    out = Path(options.out) if options.out else default_index_dir(run.run_dir)
    dim, count = first.embedding_dim, sum(part.manifest.count for part in parts)
    skipped = [Skipped(**s) for s in first.scan_skipped]
    skipped += [Skipped(**s) for part in parts for s in part.manifest.decode_failures]
    with build.writing(out, fresh="nothing was written; the partials are unchanged"):
        _refuse_existing(out, options.force, what="an index")
        if not count:
            raise UserError(f"no image of {first.gallery} could be indexed (none decoded in any shard); nothing was written")
        with atomic_directory(out) as tmp:
            embeddings_path = tmp / mf.EMBEDDINGS_FILE
            events.stage(f"concatenating {count} vectors from {len(parts)} partials")
            with vector_file.VectorWriter(embeddings_path, dim, capacity=count) as writer:
                for part in parts:
                    for _, chunk in vector_file.iter_chunks(part.directory / mf.EMBEDDINGS_FILE):
                        writer.write(chunk)
            plan = plan_index(options.index_type or "auto", count, dim)
            manifest = build.write_one_segment(
                tmp, lambda: _renumbered(parts), plan, options.seed, [first.gallery], events, fingerprint=fingerprint,
                model_path=run.model, dim=dim, image_size=first.image_size, count=count, next_id=count, gallery=first.gallery,
                created=mf.now(),
            )
    threshold, note = match_threshold(run.run_dir, fingerprint)
    base = manifest.base
    return IndexResult(
        index_dir=out, gallery=first.gallery, model_path=run.model, mode="merge", written=True,
        index_type=base.index_type, factory=base.factory, count=count, added=count, skipped=skipped,
        recall_at_10=base.recall_at_10, search_params=base.search_params,
        threshold=threshold, threshold_note=note, index_bytes=index_bytes(manifest.to_json()),
        seconds=time.perf_counter() - started,
    )


def _read_parts(directories) -> list[_Part]:
    """Every partial, validated and checked against the others; sorted by shard."""
    parts = []
    for name in directories:
        directory = Path(name)
        if not directory.is_dir():
            write = command("GALLERY_DIR", "--shard", "I/N", "--model", "RUN", "--out", directory)
            raise UserError(f"{directory} is not a folder; --merge takes the folders that {write} writes")
        with naming_the_rebuild(directory):
            manifest = mf.read_part_manifest(directory)
            mf.verify_files(directory, manifest.files, PART_FILES)
            (rows, dim), _ = vector_file.read_shape(directory / mf.EMBEDDINGS_FILE)
            if rows != manifest.count or dim != manifest.embedding_dim:
                raise CorruptArtifactError(f"{directory}/{mf.EMBEDDINGS_FILE} is ({rows}, {dim}), expected "
                                           f"({manifest.count}, {manifest.embedding_dim}); {REBUILD}")
        parts.append(_Part(directory, manifest))
    parts.sort(key=lambda part: part.shard)
    first = parts[0]
    for part in parts[1:]:
        for key, why in (("shards", "a different number of shards"),
                         ("listing_sha256", "a different listing of the gallery (images added or removed between the shard runs, "
                                            "or another gallery); run every shard again on the same gallery"),
                         ("model_fingerprint", "a different model"),
                         ("batch_size", "a different --batch-size (the vectors would not match a single build's)"),
                         ("embedding_dim", "a different embedding size")):
            if getattr(part.manifest, key) != getattr(first.manifest, key):
                raise UserError(f"{part.directory} was made with {why} than {first.directory}; the partials cannot be merged")
    shards = first.manifest.shards
    seen: dict[int, Path] = {}
    for part in parts:
        if part.shard in seen:
            raise UserError(f"shard {part.shard}/{shards} is given twice ({seen[part.shard]} and {part.directory}); pass each partial once")
        seen[part.shard] = part.directory
    missing = [str(i) for i in range(1, shards + 1) if i not in seen]
    if missing:
        meta = first.manifest
        write = command(meta.gallery, "--shard", f"I/{shards}", "--batch-size", meta.batch_size, "--model", meta.model_path,
                        "--out", "PART_I")
        raise UserError(f"partial(s) for shard {', '.join(f'{i}/{shards}' for i in missing)} missing; write each with {write} "
                        f"(I = {', '.join(missing)}) "
                        f"and pass all {shards} to --merge")
    return parts


def _renumbered(parts: list[_Part]):
    """The partials' rows in shard order, with ids 0, 1, 2… as a single build gives them."""
    next_id = 0
    for part in parts:
        for item in read_items(part.directory / mf.ITEMS_FILE, [part.manifest.gallery]):
            yield dataclasses.replace(item, id=next_id)
            next_id += 1


def _refuse_existing(out: Path, force: bool, what: str) -> None:
    """--out must be new, empty, or replaced knowingly (--force)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for {what}")
    if out.is_dir() and any(out.iterdir()) and not force:
        holds = "an index" if (out / mf.MANIFEST).is_file() else "files"
        raise UserError(f"{out} already holds {holds}; pass --force to replace it, or choose another --out")
