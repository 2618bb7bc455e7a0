"""manifest.json: what an index was built from, how, its segments, and checksums of their files.

An index is a list of immutable segments. The index folder itself is the first (the base,
written by a full build); each `siamcli index --append` that adds images writes one more under
`segments/NNNNNN/`; rows an update removes are listed in a tombstone file instead of being
rewritten. The manifest names them all and is replaced by one rename, so a reader sees the
index before an update or after it, never half of one. Each segment holds:

    index.faiss     FAISS index of its rows (the id FAISS returns is the row in the segment)
    items.sqlite    one row per vector: id, path, label, sha256, size, mtime (items.py)
    embeddings.npy  (rows, dim) float32 vectors, for rebuilds (absent when the FAISS index
                    itself stores them, as the compact ivfpq type does)

Keys (a JSON object; unknown keys are kept by readers that do not need them):

    format             "siamcli-index/2"
    model_fingerprint  sha256 of the model.keras the embeddings came from; query refuses any other
    model_path         absolute path of that model.keras when the index was built
    embedding_dim      length of every vector; index.faiss must have this dimension
    image_size         side the model resizes images to
    metric             "inner_product" (cosine similarity of unit vectors)
    factory, index_type, chosen_by, search_params, recall_at_10, recall_sample, recall_count
                       of the base segment: FAISS index_factory string, flat | hnsw | ivf | ivfpq
                       | sq8, "auto" or "user", {"efSearch": n} | {"nprobe": n, …}, recall@10
                       measured against exact search on recall_sample held-out vectors when the
                       base held recall_count rows
    rows               rows of the base segment (deleted ones included)
    files              {name: {"bytes": n, "sha256": hex}} for the base segment's files
    segments           the later segments, oldest first: [{"name": "segments/000001", "number": 1,
                       "rows": n, "factory", "index_type", "search_params", "recall_at_10", "files"}]
    deleted            null, or {"file": "deleted-000004.npy", "rows": n, "bytes", "sha256"}: an
                       (n, 2) int64 array of (segment number, row) pairs removed (base = 0)
    count, next_id     live rows; the id the next new image gets (ids are never reused)
    generation         1 for a full build, +1 per update; next_segment: number of the next segment
    retired            files and segments this generation stopped using; the next update deletes
                       them (a query that read the previous manifest a moment ago may still open them)
    gallery            the gallery folder of the last build
    galleries          every gallery folder the index spans (`--append --add-gallery` adds one;
                       `--append --moved` replaces the one it had)
    siamcli_version, faiss_version, created, updated

No match threshold: it belongs to the model's run (`<run>/calibration.json`), read from there.

A partial written by `siamcli index GALLERY --shard I/N` has "format": "siamcli-index-part/1"
and its own keys (PART_REQUIRED; see shard.py); read_manifest refuses it with a message that
says to merge the partials.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.hashing import file_sha256
from siamcli.index.hints import REBUILD, command
from siamcli.jsonio import read_json

FORMAT = "siamcli-index/2"
OLD_FORMATS = ("siamcli-index/1",)  # items.csv + hashes.csv, no segments: rebuilt with --force
PART_FORMAT = "siamcli-index-part/1"  # one shard's vectors, before `siamcli index --merge` (shard.py)
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.sqlite"
EMBEDDINGS_FILE = "embeddings.npy"
SEGMENT_FILES = (INDEX_FILE, ITEMS_FILE, EMBEDDINGS_FILE)  # embeddings.npy only where the index does not store the vectors
SEGMENTS_DIR = "segments"
REQUIRED = ("model_fingerprint", "model_path", "embedding_dim", "metric", "factory", "index_type", "image_size", "count", "files",
            "rows", "segments")
PART_REQUIRED = ("shard", "shards", "gallery", "gallery_count", "listing_sha256", "batch_size", "range", "count",
                 "model_fingerprint", "model_path", "embedding_dim", "image_size", "files")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def read_manifest(directory: Path) -> dict:
    data = _read_object(directory, missing="it is not a siamcli index")
    if data.get("format") == PART_FORMAT:
        shards = data.get("shards", "N")
        merge = command("--merge", "PART_1", "...", f"PART_{shards}", "--model", data.get("model_path") or "RUN")
        raise UserError(f"{directory} is a partial index (shard {data.get('shard')}/{shards}), not a searchable one: "
                        f"combine all {shards} partials with {merge} and use the merged index")
    path = directory / MANIFEST
    if data.get("format") in OLD_FORMATS:
        raise UserError(f"{directory} was written by an older siamcli ({data['format']}, before segments); {REBUILD}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise CorruptArtifactError(f"{path} lacks {', '.join(missing)}; {REBUILD}")
    if not isinstance(data["segments"], list) or not all(isinstance(s, dict) for s in data["segments"]):
        raise CorruptArtifactError(f"{path}: segments is not a list of objects; {REBUILD}")
    return _checked(path, data)


def read_part_manifest(directory: Path) -> dict:
    """manifest.json of a partial written by `siamcli index GALLERY --shard I/N`, validated."""
    write = command("GALLERY_DIR", "--shard", "I/N", "--model", "RUN", "--out", directory)
    data = _read_object(directory, missing=f"it is not a partial index (write one with {write})")
    path = directory / MANIFEST
    if data.get("format") != PART_FORMAT:
        what = "a whole index" if data.get("format") == FORMAT else "not a partial index"
        raise UserError(f"{directory} is {what}; --merge takes the folders that {write} writes")
    missing = [key for key in PART_REQUIRED if key not in data]
    if missing:
        raise CorruptArtifactError(f"{path} lacks {', '.join(missing)}; {REBUILD}")
    for key in ("shard", "shards", "gallery_count", "batch_size"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
            raise CorruptArtifactError(f"{path}: {key} is not a positive integer; {REBUILD}")
    return _checked(path, data)


def _read_object(directory: Path, missing: str) -> dict:
    return read_json(directory / MANIFEST, "index manifest", missing=missing, damaged=f"the index is damaged: {REBUILD}")


def _checked(path: Path, data: dict) -> dict:
    if data.get("metric", "inner_product") != "inner_product":
        raise CorruptArtifactError(f"{path} names metric {data['metric']!r}; siamcli indexes use inner_product: {REBUILD}")
    for key in ("embedding_dim", "count", "image_size", *(("rows",) if "rows" in data else ())):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
            raise CorruptArtifactError(f"{path}: {key} is not a non-negative integer; {REBUILD}")
    if not isinstance(data["files"], dict):
        raise CorruptArtifactError(f"{path}: files is not an object; {REBUILD}")
    return data


def verify_files(directory: Path, files: dict, names: tuple[str, ...], hash_max_bytes: int | None = None) -> None:
    """Each named file must have the size and sha256 recorded in `files` when it was written.

    A file over `hash_max_bytes` is checked by size only (hashing it would read every byte:
    10 GB per query at 10^7 vectors); None hashes every file.
    """
    for name in names:
        record = files.get(name)
        path = directory / name
        if not isinstance(record, dict) or "bytes" not in record or "sha256" not in record:
            raise CorruptArtifactError(f"{directory / MANIFEST} has no checksum for {name}; {REBUILD}")
        try:
            size = os.stat(path).st_size
        except OSError:
            size = None
        if size is None or not path.is_file():
            raise CorruptArtifactError(f"{path} is missing; the index is incomplete: {REBUILD}")
        if size != record["bytes"]:
            raise CorruptArtifactError(
                f"{path} is {size} bytes but was written as {record['bytes']} (truncated or changed); {REBUILD}"
            )
        if hash_max_bytes is not None and size > hash_max_bytes:
            continue
        if file_record(path)["sha256"] != record["sha256"]:
            raise CorruptArtifactError(f"{path} does not match the checksum in {MANIFEST} (damaged or edited); {REBUILD}")
