"""What is clustered: a folder's images (embedded by a run's model) or an index's stored vectors.

Either way the result is the images' paths, the identity each sits under (its top-level
folder: what `--score` compares with), and their unit vectors; the model and run they came from
decide the calibrated threshold. An index is read as it is (every live row of every segment,
through the index's own readers): nothing is re-embedded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamcli.cluster.options import ClusterOptions
from siamcli.data.scan import Skipped, describe_skipped, require_folder
from siamcli.errors import UserError
from siamcli.events import Events
from siamcli.hashing import file_sha256
from siamcli.index.build import scan_gallery
from siamcli.index.changes import copy_vectors
from siamcli.index.locate import resolve_model
from siamcli.index.store import LoadedIndex, check_model, galleries_of, load_index
from siamcli.rundir import find_run


@dataclass
class Images:
    origin: str  # the folder, or the index directory
    paths: list[str]
    identities: list[str]  # top-level folder of each image ("" at the root)
    galleries: list[str]  # folders the outputs must stay out of (they would be clustered next time)
    model_path: Path | None  # None: an index whose model is gone (then --threshold is needed)
    fingerprint: str  # sha256 of the model the vectors come from
    skipped: list[Skipped] = field(default_factory=list)
    index: LoadedIndex | None = None


def open_folder(options: ClusterOptions) -> Images:
    """The folder's images and the run's model, checked; nothing is embedded yet (files passed
    over are named, with those that fail to decode, by load_vectors)."""
    require_folder(options.folder)
    run = find_run(options.model)
    scan, paths, identities = scan_gallery(options.folder)
    if not paths:
        raise UserError(f"{options.folder} holds no images to cluster (JPEG, PNG, BMP, GIF, WebP, TIFF, PGM), in it or in its sub-folders")
    return Images(origin=str(options.folder), paths=paths, identities=identities, galleries=[str(options.folder)],
                  model_path=run.model, fingerprint=file_sha256(run.model), skipped=list(scan.skipped))


def open_index(options: ClusterOptions) -> Images:
    """The index's live rows; its model is looked up only when it is needed (or named)."""
    loaded = load_index(options.index)
    if loaded.count == 0:
        raise UserError(f"index {options.index} is empty; add images with `siamcli index GALLERY --append --out {options.index}`")
    fingerprint = str(loaded.manifest["model_fingerprint"])
    model_path = None
    if options.model is not None:
        model_path = find_run(options.model).model
        check_model(loaded.manifest, model_path, file_sha256(model_path), loaded.directory)
    elif options.threshold is None:
        model_path = resolve_model(loaded, None)  # its run holds the calibration; gone: one line saying so
    items = loaded.items
    return Images(origin=str(options.index), paths=[item.path for item in items], identities=[item.label for item in items],
                  galleries=galleries_of(loaded.manifest), model_path=model_path, fingerprint=fingerprint, index=loaded)


def load_vectors(images: Images, batch_size: int, events: Events) -> np.ndarray:
    """(N, d) float32 unit vectors of `images` (images that do not decode are dropped from it)."""
    if images.index is not None:
        vectors = _stored_vectors(images.index, events)
    else:
        vectors = _embedded(images, batch_size, events)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, np.maximum(norms, 1e-12), out=vectors)  # 8-bit stored vectors are unit length only to ≈ 0.01
    return vectors


def _stored_vectors(loaded: LoadedIndex, events: Events) -> np.ndarray:
    rows = _Rows(loaded.count, loaded.dim)
    copy_vectors(loaded, loaded.entries, rows, events)  # every live row, in the order of `entries`
    if rows.filled != loaded.count:
        raise UserError(f"index {loaded.directory} gave {rows.filled} vectors for {loaded.count} rows; rebuild it with --force")
    return rows.array


class _Rows:
    """An in-memory stand-in for the VectorWriter that copy_vectors writes to."""

    def __init__(self, count: int, dim: int):
        self.array = np.empty((count, dim), np.float32)
        self.filled = 0

    def write(self, rows: np.ndarray) -> None:
        self.array[self.filled:self.filled + len(rows)] = rows
        self.filled += len(rows)


def _embedded(images: Images, batch_size: int, events: Events) -> np.ndarray:
    events.stage(f"loading model {images.model_path}")  # first: importing TensorFlow is most of it
    from siamcli.models.embed import embed
    from siamcli.models.run_model import load_run_model

    loaded = load_run_model(images.model_path, images.fingerprint)
    events.stage("embedding", len(images.paths))
    embedded = embed(loaded.model, images.paths, batch_size=batch_size, image_size=loaded.image_size, on_progress=events.advance)
    images.skipped.extend(embedded.failures)
    if images.skipped:
        events.message(describe_skipped(images.skipped))
    if embedded.failures:
        images.paths = [images.paths[i] for i in embedded.kept]
        images.identities = [images.identities[i] for i in embedded.kept]
    if not images.paths:
        raise UserError(f"none of the images in {images.origin} could be read; " + describe_skipped(embedded.failures))
    return embedded.vectors
