"""manifest.json: what an index was built from, how, and checksums of its files.

Keys (a JSON object; unknown keys are kept by readers that do not need them):

    format             "siamcli-index/1"
    model_fingerprint  sha256 of the model.keras the embeddings came from; query refuses any other
    model_path         absolute path of that model.keras when the index was built
    embedding_dim      length of every vector; index.faiss must have this dimension
    image_size         side the model resizes images to
    metric             "inner_product" (cosine similarity of unit vectors)
    factory            FAISS index_factory string: "Flat", "IDMap,HNSW32,Flat", "IVF4096,Flat"…
    index_type         flat | hnsw | ivf | ivfpq;  chosen_by: "auto" or "user"
    search_params      {"efSearch": n} | {"nprobe": n} | {} | for ivfpq
                       {"nprobe": n, "k_factor_rf": k[, "quantizer_efSearch": e]}
    recall_at_10       measured against exact search (1.0 for flat: exact by construction)
    recall_sample      held-out vectors recall was measured on (0 for flat)
    recall_count       gallery size when it was measured (appends re-measure past 1.25×)
    count, next_id     rows in the index; the id the next new image gets (ids are never reused)
    gallery            the gallery folder of the last build
    galleries          every gallery folder the index spans (`--append --add-gallery` adds one;
                       `--append --moved` replaces the one it had)

No match threshold: it belongs to the model's run (`<run>/calibration.json`), read from there.
    siamcli_version, faiss_version, created, updated
    files              {name: {"bytes": n, "sha256": hex}} for every other file of the index

A partial written by `siamcli index GALLERY --shard I/N` has "format": "siamcli-index-part/1"
and its own keys (PART_REQUIRED; see shard.py); read_manifest refuses it with a message that
says to merge the partials.
"""

from __future__ import annotations

import time
from pathlib import Path

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.hashing import file_sha256
from siamcli.jsonio import read_json

FORMAT = "siamcli-index/1"
PART_FORMAT = "siamcli-index-part/1"  # one shard's vectors, before `siamcli index --merge` (shard.py)
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
ITEMS_FILE = "items.csv"
HASHES_FILE = "hashes.csv"
EMBEDDINGS_FILE = "embeddings.npy"
DATA_FILES = (INDEX_FILE, ITEMS_FILE, HASHES_FILE, EMBEDDINGS_FILE)
REQUIRED = ("model_fingerprint", "model_path", "embedding_dim", "metric", "factory", "index_type", "image_size", "count", "files")
PART_REQUIRED = ("shard", "shards", "gallery", "gallery_count", "listing_sha256", "batch_size", "range", "count",
                 "model_fingerprint", "model_path", "embedding_dim", "image_size", "files")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def read_manifest(directory: Path) -> dict:
    data = _read_object(directory)
    if data.get("format") == PART_FORMAT:
        raise UserError(
            f"{directory} is a partial index (shard {data.get('shard')}/{data.get('shards')}), not a searchable one: "
            "combine all the partials with `siamcli index --merge PART_DIR...` and use the merged index"
        )
    path = directory / MANIFEST
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise CorruptArtifactError(f"{path} lacks {', '.join(missing)}; rebuild the index with --force")
    return _checked(path, data)


def read_part_manifest(directory: Path) -> dict:
    """manifest.json of a partial written by `siamcli index GALLERY --shard I/N`, validated."""
    data = _read_object(directory)
    path = directory / MANIFEST
    if data.get("format") != PART_FORMAT:
        what = "a whole index" if data.get("format") == FORMAT else "not a partial index"
        raise UserError(f"{directory} is {what}; --merge takes the folders written by `siamcli index GALLERY --shard I/N`")
    missing = [key for key in PART_REQUIRED if key not in data]
    if missing:
        raise CorruptArtifactError(f"{path} lacks {', '.join(missing)}; run that shard again with --force")
    for key in ("shard", "shards", "gallery_count", "batch_size"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
            raise CorruptArtifactError(f"{path}: {key} is not a positive integer; run that shard again with --force")
    return _checked(path, data)


def _read_object(directory: Path) -> dict:
    return read_json(directory / MANIFEST, "index manifest",
                     missing="it is not a siamcli index (build one with `siamcli index GALLERY`)",
                     damaged="the index is damaged: rebuild it with --force")


def _checked(path: Path, data: dict) -> dict:
    if data.get("metric", "inner_product") != "inner_product":
        raise CorruptArtifactError(f"{path} names metric {data['metric']!r}; siamcli indexes use inner_product: rebuild with --force")
    for key in ("embedding_dim", "count", "image_size"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 0:
            raise CorruptArtifactError(f"{path}: {key} is not a non-negative integer; rebuild the index with --force")
    if not isinstance(data["files"], dict):
        raise CorruptArtifactError(f"{path}: files is not an object; rebuild the index with --force")
    return data


def verify_files(directory: Path, manifest: dict, names: tuple[str, ...]) -> None:
    """Each named file must have the size and sha256 the manifest recorded when it was built."""
    for name in names:
        record = manifest["files"].get(name)
        path = directory / name
        if not isinstance(record, dict) or "bytes" not in record or "sha256" not in record:
            raise CorruptArtifactError(f"{directory / MANIFEST} has no checksum for {name}; rebuild the index with --force")
        if not path.is_file():
            raise CorruptArtifactError(f"{path} is missing; the index is incomplete: rebuild it with `siamcli index GALLERY --force`")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise CorruptArtifactError(
                f"{path} is {size} bytes but was written as {record['bytes']} (truncated or changed); rebuild the index with --force"
            )
        if file_record(path)["sha256"] != record["sha256"]:
            raise CorruptArtifactError(f"{path} does not match the checksum in {MANIFEST} (damaged or edited); rebuild the index with --force")
