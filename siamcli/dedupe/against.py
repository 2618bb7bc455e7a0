"""--against INDEX: the folder's images checked against an indexed gallery, which is only read.

The index is opened as `siamcli query` opens it (index.search.open_index: manifest, checksums,
the model checked by fingerprint; --model must be that model, the manifest names it otherwise)
and the new images are embedded as queries are (index.search.embed_queries). Pairs:
  * exact: a new image whose sha256 an indexed image has (items.sqlite, every live row);
  * near: a new image and one of its NEIGHBOURS nearest indexed images (the index's own FAISS
    search) with cosine similarity ≥ the threshold;
  * and among the new images themselves, exact and near, as `--model` finds them.
An indexed file that is one of the folder's own images (the folder holds indexed files) is that
same image, not a duplicate of it: it is marked indexed. A group that holds an indexed image
keeps one (the --keep rule among them: an indexed file outside the folder counts 0 pixels, its
recorded bytes and time); indexed files are never moved.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from siamcli.data.scan import Skipped
from siamcli.dedupe import pairs as near
from siamcli.dedupe.embedded import embed_folder
from siamcli.dedupe.groups import Files
from siamcli.dedupe.result import DedupeOptions, DedupeResult, build_result
from siamcli.dedupe.thresholds import EMBEDDING_MIN
from siamcli.events import Events


class _Gallery:
    """Graph rows for indexed images: the folder's own row for its own files, new rows after it."""

    def __init__(self, loaded, own_paths: list[str]):
        self.loaded = loaded
        self.own = {os.path.abspath(path): row for row, path in enumerate(own_paths)}
        self.first_new = len(own_paths)
        self.items: list = []
        self.rows: dict[str, int] = {}
        self.indexed: set[int] = set()

    def row(self, item) -> int:
        path = os.path.abspath(item.path)
        if path in self.own:
            row = self.own[path]
        elif path in self.rows:
            row = self.rows[path]
        else:
            row = self.rows[path] = self.first_new + len(self.items)
            self.items.append(item)
        self.indexed.add(row)
        return row

    def files(self) -> Files:
        items = self.items
        return Files([item.path for item in items],
                     np.array([np.frombuffer(bytes.fromhex(item.sha256 or "00" * 32), np.uint8) for item in items], np.uint8).reshape(-1, 32),
                     np.zeros(len(items), np.int64), np.array([item.size for item in items], np.int64),
                     np.array([item.mtime_ns for item in items], np.int64))


def against_index(folder: Path, paths: list[str], skipped: list[Skipped], options: DedupeOptions, events: Events) -> DedupeResult:
    from siamcli.index.search import embed_queries, open_index

    loaded, model_path, fingerprint = open_index(Path(options.against), options.model)
    notes: list[str] = []

    def embed(images: list[str]):
        embedded, note = embed_queries(model_path, fingerprint, loaded, images, options.batch_size)
        notes.extend([note] if note else [])
        return embedded

    folder_images = embed_folder(paths, embed, options.workers, events)
    keys, threshold = folder_images.keys, EMBEDDING_MIN if options.threshold is None else options.threshold
    events.stage("searching pairs")
    gallery = _Gallery(loaded, keys.paths)
    own = near.nearest_pairs(folder_images.vectors, near.NEIGHBOURS, minimum=threshold)
    found = [folder_images.exact, near.lifted(own[:2], folder_images.leaders)]
    by_content = _exact_with_gallery(keys, gallery)
    by_vector = _near_gallery(folder_images, gallery, threshold)
    found += [by_content, by_vector]
    counts = {"exact": len(folder_images.exact[0]), "embedding": len(own[0]), "exact_indexed": len(by_content[0]),
              "embedding_indexed": len(by_vector[0])}
    result = build_result(folder, "embedding", {"cosine_min": threshold, "model": str(model_path), "index": str(options.against)},
                          keys, skipped, found, counts, options, gallery.files(), gallery.indexed)
    result.notes.extend(notes)
    return result


def _exact_with_gallery(keys, gallery: _Gallery) -> near.Pairs:
    """(folder row, gallery row) for each folder image whose content an indexed image has."""
    by_sha: dict[str, list] = {}
    for _, item in gallery.loaded.entries:
        if item.sha256:
            by_sha.setdefault(item.sha256, []).append(item)
    first, second = [], []
    for row in range(keys.count):
        for item in by_sha.get(keys.sha256[row].tobytes().hex(), ()):
            other = gallery.row(item)
            if other != row:
                first.append(row)
                second.append(other)
    return _pairs(first, second)


def _near_gallery(folder_images, gallery: _Gallery, threshold: float) -> near.Pairs:
    """(folder row, gallery row) for each folder image and its nearest indexed images at ≥ threshold."""
    depth = min(near.NEIGHBOURS, gallery.loaded.count)
    if depth == 0 or len(folder_images.vectors) == 0:
        return near.no_pairs()
    hits = gallery.loaded.search(folder_images.vectors, depth)
    wanted = {ref for found in hits for score, ref in found if score >= threshold}
    items = gallery.loaded.lookup(wanted) if wanted else {}
    first, second = [], []
    for position, found in enumerate(hits):
        row = int(folder_images.leaders[position])
        for score, ref in found:
            if score >= threshold:
                other = gallery.row(items[ref])
                if other != row:
                    first.append(row)
                    second.append(other)
    return _pairs(first, second)


def _pairs(first: list[int], second: list[int]) -> near.Pairs:
    a, b = np.array(first, np.int64), np.array(second, np.int64)
    return np.minimum(a, b), np.maximum(a, b)
