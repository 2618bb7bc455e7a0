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

Typed as IndexManifest (the base segment and each later one a SegmentRecord) and PartManifest,
read by read_manifest / read_part_manifest and written by write_manifest alone. The format
string is the version of the manifest and of the segment records inside it. Keys (a JSON
object; unknown keys are kept, in IndexManifest.extra, and written back by updates):

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

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from siamcli import __version__
from siamcli.atomic import write_json
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


def read_manifest(directory: Path) -> "IndexManifest":
    """The one reader of a searchable index's manifest.json: checked, then typed."""
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
    return IndexManifest.from_json(_checked(path, data), path)


def read_part_manifest(directory: Path) -> "PartManifest":
    """manifest.json of a partial written by `siamcli index GALLERY --shard I/N`, validated and typed."""
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
    return PartManifest.from_json(_checked(path, data))


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


# ---------------------------------------------------------------- the typed records, their one writer

SEGMENT_KEYS = ("rows", "factory", "index_type", "chosen_by", "search_params", "recall_at_10", "recall_sample", "recall_count",
                "files")  # a later segment's keys after name and number, in the order written
BASE_KEYS = ("factory", "index_type", "chosen_by", "search_params", "recall_at_10", "recall_sample", "recall_count", "rows",
             "files")  # the base segment's, at the manifest's top level
INDEX_KEYS = ("format", "model_fingerprint", "model_path", "embedding_dim", "image_size", "metric", *BASE_KEYS, "segments",
              "deleted", "count", "next_id", "generation", "next_segment", "retired", "gallery", "galleries",
              "siamcli_version", "faiss_version", "created", "updated")  # manifest.json's keys, in the order written


@dataclass(frozen=True)
class SegmentRecord:
    """One segment as the manifest records it (version: the manifest's format). Keys absent from an
    index written by an earlier release stay absent (None here) when it is written again."""

    rows: int  # rows written, deleted ones included
    factory: str | None
    index_type: str | None
    search_params: dict | None  # {"efSearch": n} | {"nprobe": n, …}; checked when the segment is opened
    recall_at_10: float | None
    files: dict  # {name: {"bytes": n, "sha256": hex}}
    chosen_by: str | None = None  # "auto" | "user"
    recall_sample: int | None = None
    recall_count: int | None = None
    name: str = ""  # "" = the base (the index folder itself), else "segments/NNNNNN"
    number: int = 0  # 0 = the base

    def fields(self, keys: tuple[str, ...] = SEGMENT_KEYS) -> dict:
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}

    def to_json(self) -> dict:
        """The entry of a later segment in `segments`."""
        return {"name": self.name, "number": self.number, **self.fields()}

    @classmethod
    def from_json(cls, data: dict, where: Path, name: str | None = None, number: int | None = None) -> "SegmentRecord":
        """`data`: a `segments` entry, or the manifest itself for the base (name "", number 0)."""
        try:
            name = str(data["name"]) if name is None else name
            number = int(data["number"]) if number is None else number
            rows = int(data["rows"])
            if not isinstance(data["files"], dict) or rows < 0 or name.startswith(("/", "..")):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CorruptArtifactError(f"{where} describes a segment it cannot read; {REBUILD}") from None
        return cls(**{key: data.get(key) for key in SEGMENT_KEYS}, name=name, number=number)

    def placed(self, number: int) -> "SegmentRecord":
        """This record as later segment `number` (segments/NNNNNN)."""
        return dataclasses.replace(self, name=f"{SEGMENTS_DIR}/{number:06d}", number=number)


@dataclass(frozen=True)
class IndexManifest:
    """manifest.json of a searchable index ("siamcli-index/2"; keys: the module docstring)."""

    model_fingerprint: str
    model_path: str
    embedding_dim: int
    image_size: int
    base: SegmentRecord
    count: int  # live rows
    segments: tuple[SegmentRecord, ...] = ()
    deleted: dict | None = None  # the tombstone file's record
    next_id: int | None = None
    generation: int | None = None  # None (an earlier release's index): read as 1
    next_segment: int | None = None  # None: read as 1
    retired: list | None = None
    gallery: str | None = None
    galleries: list | None = None
    siamcli_version: str | None = None
    faiss_version: str | None = None
    created: str | None = None
    updated: str | None = None
    metric: str = "inner_product"
    format: str = FORMAT
    extra: dict = field(default_factory=dict)  # keys this version does not know: kept as read, written back

    def to_json(self) -> dict:
        data = {"format": self.format, "model_fingerprint": self.model_fingerprint, "model_path": self.model_path,
                "embedding_dim": self.embedding_dim, "image_size": self.image_size, "metric": self.metric,
                **self.base.fields(BASE_KEYS), "segments": [segment.to_json() for segment in self.segments],
                "deleted": self.deleted, "count": self.count}
        for key in INDEX_KEYS[INDEX_KEYS.index("next_id"):]:
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict, where: Path) -> "IndexManifest":
        """A manifest already checked by read_manifest (required keys, types)."""
        typed = {key: data.get(key) for key in INDEX_KEYS[INDEX_KEYS.index("next_id"):]}
        return cls(model_fingerprint=data["model_fingerprint"], model_path=data["model_path"], embedding_dim=data["embedding_dim"],
                   image_size=data["image_size"], base=SegmentRecord.from_json(data, where, name="", number=0),
                   count=data["count"], segments=tuple(SegmentRecord.from_json(s, where) for s in data["segments"]),
                   deleted=data.get("deleted"), metric=data.get("metric", "inner_product"), format=data["format"],
                   extra={key: value for key, value in data.items() if key not in INDEX_KEYS}, **typed)

    @classmethod
    def single_segment(cls, base: SegmentRecord, *, fingerprint: str, model_path: Path, dim: int, image_size: int, count: int,
                       next_id: int, gallery: str, galleries: list[str] | None, created: str,
                       faiss_version: str) -> "IndexManifest":
        """A whole index that is one segment (a build, a rewrite, a merge): generation 1, no tombstones.
        `gallery`: the folder of this build; `galleries`: all it spans (None: that one)."""
        here = os.path.abspath(gallery)
        return cls(model_fingerprint=fingerprint, model_path=str(model_path), embedding_dim=dim, image_size=image_size,
                   base=base, count=count, next_id=next_id, generation=1, next_segment=1, retired=[], gallery=here,
                   galleries=list(galleries or [here]), siamcli_version=__version__, faiss_version=faiss_version,
                   created=created, updated=now())

    @property
    def all_segments(self) -> tuple[SegmentRecord, ...]:
        return (self.base, *self.segments)


@dataclass(frozen=True)
class PartManifest:
    """manifest.json of one shard's partial ("siamcli-index-part/1"; see shard.py)."""

    shard: int
    shards: int
    gallery: str
    gallery_count: int  # images in the whole gallery listing
    listing_sha256: str
    batch_size: int
    range: list  # [start, stop) of the listing this shard embedded
    count: int  # vectors written
    model_fingerprint: str
    model_path: str
    embedding_dim: int
    image_size: int
    files: dict
    scan_skipped: list = field(default_factory=list)  # [{"path", "reason"}]
    decode_failures: list = field(default_factory=list)
    siamcli_version: str = __version__
    created: str = field(default_factory=now)
    format: str = PART_FORMAT

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        order = ("format", "shard", "shards", "gallery", "gallery_count", "listing_sha256", "batch_size", "range", "count",
                 "model_fingerprint", "model_path", "embedding_dim", "image_size", "scan_skipped", "decode_failures",
                 "siamcli_version", "created", "files")
        return {key: data[key] for key in order}

    @classmethod
    def from_json(cls, data: dict) -> "PartManifest":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def write_manifest(directory: Path, manifest: IndexManifest | PartManifest) -> Path:
    """The one writer of manifest.json (atomic: the commit point of every build and update)."""
    path = Path(directory) / MANIFEST
    write_json(path, manifest.to_json())
    return path
