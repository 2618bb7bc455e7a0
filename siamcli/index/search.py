"""`siamcli query`: images in, ranked gallery neighbours out (dataclasses, not tuples).

The query images go through the model the index was built with — checked by its sha256
fingerprint, so vectors from another model are never compared with the gallery's — and
FAISS returns the k most similar rows by cosine similarity (inner product of unit vectors).
The queries are embedded by the run's light model (models/light.py: LiteRT, no TensorFlow, the
same embeddings) when it was made from that model.keras, else by model.keras with TensorFlow.
When the model's run holds a reliable calibration (`<run>/calibration.json`, written by
`siamcli evaluate` for this very model), each neighbour is marked match / no match:
similarity ≥ 1 − threshold/2, the threshold being a squared-L2 distance between unit vectors
(d = 2 − 2·cos). A neighbour whose file is gone since it was indexed is marked missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from siamcli.calibration import similarity_threshold
from siamcli.data.scan import Skipped, describe_skipped, scan_folder
from siamcli.errors import UserError
from siamcli.hashing import file_sha256
from siamcli.index.faiss_index import RECALL_K
from siamcli.index.hints import command
from siamcli.index.locate import resolve_index_dir, resolve_model  # (api, serve and cluster import them from here)
from siamcli.index.manifest import read_manifest
from siamcli.index.store import LoadedIndex, check_model, load_index, naming_the_rebuild
from siamcli.models.run_model import check_dimension
from siamcli.threshold import run_threshold  # (the notebook API imports it from here)


@dataclass(frozen=True)
class Neighbour:
    rank: int  # 1 = most similar
    id: int  # the image's stable id (items.sqlite)
    path: str
    label: str
    similarity: float  # cosine similarity, in [-1, 1]
    match: bool | None = None  # None when no threshold is calibrated
    missing: bool = False  # the file is gone since it was indexed (`siamcli index --prune` drops it)

    def to_json(self) -> dict:
        row = {"rank": self.rank, "id": self.id, "path": self.path, "label": self.label, "similarity": round(self.similarity, 6)}
        if self.match is not None:
            row["match"] = self.match
        if self.missing:
            row["missing"] = True
        return row


@dataclass(frozen=True)
class QueryResult:
    query: str
    neighbours: list[Neighbour]

    def to_json(self) -> dict:
        return {"query": self.query, "results": [n.to_json() for n in self.neighbours]}


@dataclass
class QueryOutcome:
    results: list[QueryResult]
    index_dir: Path
    model_path: Path
    count: int  # gallery size
    k: int  # neighbours returned per query (≤ the requested k)
    threshold: float | None  # squared-L2 distance; None when not calibrated
    notes: list[str] = field(default_factory=list)  # said on stderr (k clipped, files skipped)

    @property
    def similarity_threshold(self) -> float | None:
        return similarity_threshold(self.threshold)

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.results]

    def prune_hint(self) -> str | None:
        """The commands that drop the answered rows whose files are gone, one per gallery holding
        them, each with --model and --out so it prunes this index and no other; None if none is gone."""
        gone = {n.path for r in self.results for n in r.neighbours if n.missing}
        if not gone:
            return None
        galleries = read_manifest(self.index_dir).galleries or []
        holding = [g for g in galleries if any(Path(path).is_relative_to(g) for path in gone)] or ["GALLERY_DIR"]
        prune = [command(g, "--model", self.model_path, "--out", self.index_dir, "--prune") for g in holding]
        many = len(gone) > 1
        return f"{len(gone)} answered file{'s' if many else ''} gone since indexing; drop {'them' if many else 'it'} with {', then '.join(prune)}"


def query_paths(images: Sequence[str]) -> tuple[list[str], list[Skipped]]:
    """Expand IMAGE... (files or folders of images) into files; a missing one is an error (one
    that cannot be read or decoded is found by the decoder: see query_images)."""
    paths: list[str] = []
    skipped: list[Skipped] = []
    for image in images:
        path = Path(image)
        if path.is_dir():
            scan = scan_folder(path, labelled=False)
            paths.extend(item.path for item in scan.items)
            skipped.extend(scan.skipped)
            if not scan.items:
                raise UserError(f"query folder {image} holds no images")
        elif not path.exists():
            raise UserError(f"query image {image} not found")
        elif not path.is_file():
            raise UserError(f"query image {image} is not a file")
        else:
            paths.append(str(path))
    if not paths:
        raise UserError("no query images given")
    return paths, skipped


def search_vectors(loaded: LoadedIndex, vectors: np.ndarray, k: int, similarity_threshold: float | None = None) -> list[list[Neighbour]]:
    """The k best live rows of every segment per (unit) vector, best first; k is clipped to the
    gallery size. Only the k rows found are read from the items tables."""
    k = min(k, loaded.count)
    if k == 0 or len(vectors) == 0:
        return [[] for _ in range(len(vectors))]
    # Search at least as deep as recall was tuned at (10), then keep k: ivfpq re-ranks
    # k_factor·depth candidates, so --k 1 alone would re-rank a tenth of what was measured.
    depth = min(max(k, RECALL_K), loaded.count)
    hits = [found[:k] for found in loaded.search(vectors, depth)]
    items = loaded.lookup(ref for found in hits for _, ref in found)
    answers = []
    for found in hits:
        neighbours = []
        for score, ref in found:
            item = items[ref]
            match = None if similarity_threshold is None else bool(score >= similarity_threshold)
            missing = not os.path.exists(item.path)
            neighbours.append(Neighbour(len(neighbours) + 1, item.id, item.path, item.label, score, match, missing))
        answers.append(neighbours)
    return answers


def open_index(index_dir: Path, model: str | None) -> tuple[LoadedIndex, Path, str]:
    """(the loaded index, the model to embed queries with, its sha256): --model must be the
    model the index was built with, else the one its manifest names."""
    loaded = load_index(index_dir)
    model_path = resolve_model(loaded, model)
    fingerprint = file_sha256(model_path)
    check_model(loaded.manifest, model_path, fingerprint, index_dir)
    return loaded, model_path, fingerprint


def load_query_model(model_path: Path, loaded: LoadedIndex):
    """The Keras model that embeds queries for `loaded` (its vectors' length checked)."""
    from siamcli.models.run_model import load_run_model

    run_model = load_run_model(model_path)
    _check_dim(model_path, run_model.dim, loaded)
    return run_model.model


def _check_dim(model_path: Path, dim: int, loaded: LoadedIndex) -> None:
    with naming_the_rebuild(loaded.directory, model=model_path):  # the message ends with the exact rebuild command
        check_dimension(model_path, dim, loaded.directory, loaded.dim)


def embed_queries(model_path: Path, fingerprint: str, loaded: LoadedIndex, paths: list[str], batch_size: int):
    """(the query images embedded, a note or ""): through the run's light model when it was made
    from this model.keras (no TensorFlow imported), else through model.keras with TensorFlow and
    a note saying so and how to write the light model."""
    from siamcli.models.light import open_light_model, tensorflow_note

    light, why = open_light_model(model_path.parent, fingerprint)
    if light is not None:
        _check_dim(model_path, light.dim, loaded)
        return light.embed(paths, batch_size), ""
    from siamcli.models.embed import embed

    return embed(load_query_model(model_path, loaded), paths, batch_size=batch_size), tensorflow_note(why)


def query_images(
    images: Sequence[str],
    index: str | None = None,
    model: str | None = None,
    k: int = 5,
    batch_size: int = 32,
) -> QueryOutcome:
    """Embed each query image and return its k nearest gallery images.

    An image that cannot be decoded is skipped (said in `notes`), as a folder's or one of several
    named; a single named image that cannot, or none that can, is an error."""
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    paths, skipped = query_paths(images)
    index_dir = resolve_index_dir(index, model)
    loaded, model_path, fingerprint = open_index(index_dir, model)
    if loaded.count == 0:
        raise UserError(f"index {index_dir} is empty; add images with `siamcli index GALLERY --append`")

    embedded, runtime_note = embed_queries(model_path, fingerprint, loaded, paths, batch_size)
    named = {str(Path(p)) for p in images if not Path(p).is_dir()}
    for failure in embedded.failures:
        if str(Path(failure.path)) in named and len(paths) == 1:
            raise UserError(f"cannot read query image {failure.path}: {failure.reason}")
    skipped.extend(embedded.failures)
    if not embedded.kept:
        raise UserError("none of the query images could be read; " + describe_skipped(embedded.failures))

    threshold, notes = run_threshold(model_path.parent, fingerprint)
    notes[:0] = [runtime_note] if runtime_note else []
    if skipped:
        notes.append(describe_skipped(skipped))
    if k > loaded.count:
        notes.append(f"--k {k} is larger than the gallery ({loaded.count} images): returning all {loaded.count}")
    answers = search_vectors(loaded, embedded.vectors, k, similarity_threshold(threshold))
    results = [QueryResult(paths[position], neighbours) for position, neighbours in zip(embedded.kept, answers)]
    return QueryOutcome(results=results, index_dir=index_dir, model_path=model_path, count=loaded.count,
                        k=min(k, loaded.count), threshold=threshold, notes=notes)
