"""Loading an index (its manifest, segments and tombstones) and proving its files belong together.

Every check here turns a damaged, truncated or mismatched index into a CorruptArtifactError
(one line, exit 2) before FAISS or numpy read a byte of it, so a bad index is never a crash
and never a wrong answer:

  * manifest.json parses and has the required keys (an index of the older, unsegmented
    format is refused with the command that rebuilds it);
  * every file of every segment, and the tombstone file, has the recorded size and sha256
    (truncation, bit rot, hand edits) — files over QUERY_HASH_MAX_BYTES by size only, below;
  * each segment's index.faiss reads, searches by inner product and holds its `rows`;
    its items.sqlite holds rows 0 … rows-1; every segment has the manifest's dimension;
  * the live rows (rows minus tombstones, over all segments) = the manifest's count.

A file over QUERY_HASH_MAX_BYTES (256 MiB: ≈ 2.5·10^5 vectors of Flat, 10^6 of sq8, at d = 256)
is checked by size only: hashing it would read every byte (10 GB per `siamcli query` at 10^7
vectors), which memory-mapping avoids, and an update must cost what it changes, not what the
index holds. Truncation, a partial copy or an appended tail is still refused (size), and so is a
file FAISS or SQLite cannot parse; a same-size corruption inside a big file is caught when a
full rebuild (`--force`, `--compact`) reads it, which hashes every file it copies from.

IVF-family indexes (ivf, ivfpq) are memory-mapped in query processes (IO_FLAG_MMAP_IFC): a query
holds the pages its probes touch. Segments are never rewritten in place (an update adds a
segment and swaps the manifest; a compaction swaps the whole directory), so a mapped file never
changes under a running query.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.hints import REBUILD, command
from siamcli.index.items import IndexItem
from siamcli.index.segment import Segment
from siamcli.jsonio import read_json

QUERY_HASH_MAX_BYTES = 256 << 20  # files up to this size are hashed on every load; bigger ones: size only

Ref = tuple[int, int]  # (position of the segment in LoadedIndex.segments, row in it)


def rebuild_command(directory: Path, model: str | Path | None = None, gallery: str | Path | None = None) -> str:
    """The command(s) that write the index or partial at `directory` again: from its manifest as far
    as it can be read, else from `model` and `gallery` (placeholders for what nothing says)."""
    try:
        data = read_json(directory / mf.MANIFEST, "index manifest")
    except (CorruptArtifactError, OSError):
        data = {}

    def text(value, default: str) -> str:
        return value if isinstance(value, str) and value else default

    model = model or text(data.get("model_path"), "RUN")
    if data.get("format") == mf.PART_FORMAT:
        shard = f"{data.get('shard', 'I')}/{data.get('shards', 'N')}"
        return command(text(data.get("gallery"), str(gallery or "GALLERY_DIR")), "--shard", shard, "--batch-size",
                       data.get("batch_size", 32), "--model", model, "--out", directory, "--force")
    galleries = data.get("galleries") if isinstance(data.get("galleries"), list) else []
    galleries = [g for g in galleries if isinstance(g, str)] or [text(data.get("gallery"), str(gallery or "GALLERY_DIR"))]
    first = command(galleries[0], "--model", model, "--out", directory, "--force")
    further = [command(g, "--model", model, "--out", directory, "--append", "--add-gallery") for g in galleries[1:]]
    return first + (f", then {', then '.join(further)}" if further else "")


@contextlib.contextmanager
def naming_the_rebuild(directory: Path, model: str | Path | None = None, gallery: str | Path | None = None):
    """A damaged-index error raised inside (its message ends with hints.REBUILD) gets the exact rebuild command."""
    try:
        yield
    except UserError as exc:
        if not str(exc).endswith(REBUILD):
            raise
        raise type(exc)(f"{exc} with {rebuild_command(Path(directory), model, gallery)}") from exc


def _naming_the_rebuild(method):
    """LoadedIndex methods read files lazily: their damaged-file errors name the rebuild too."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with naming_the_rebuild(self.directory):
            return method(self, *args, **kwargs)
    return wrapper


@dataclass
class LoadedIndex:
    directory: Path
    record: mf.IndexManifest  # manifest.json, typed
    segments: list[Segment]  # the base first, then the later segments, oldest first

    @functools.cached_property
    def manifest(self) -> dict:
        """manifest.json as JSON keys (for the callers that read it by key)."""
        return self.record.to_json()

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def index(self):
        """The base segment's FAISS index."""
        return self.segments[0].index

    @functools.cached_property
    @_naming_the_rebuild
    def entries(self) -> list[tuple[Ref, IndexItem]]:
        """Every live row ((segment, row), item), base first, in row order: read once, then kept."""
        return [((position, row), item) for position, segment in enumerate(self.segments) for row, item in segment.live_items()]

    @functools.cached_property
    def _by_ref(self) -> dict[Ref, IndexItem]:
        return dict(self.entries)

    @property
    def items(self) -> list[IndexItem]:
        return [item for _, item in self.entries]

    @_naming_the_rebuild
    def search(self, queries: np.ndarray, depth: int) -> list[list[tuple[float, Ref]]]:
        """Per query, up to `depth` live rows of all segments as (score, ref), best first."""
        queries = np.ascontiguousarray(queries, np.float32)
        found = [segment.search(queries, depth) for segment in self.segments]
        answers = []
        for q in range(len(queries)):
            hits = [(float(score), (position, int(row)))
                    for position, (scores, rows) in enumerate(found)
                    for score, row in zip(scores[q].tolist(), rows[q].tolist()) if row >= 0]
            hits.sort(key=lambda hit: -hit[0])
            answers.append(hits[:depth])
        return answers

    @_naming_the_rebuild
    def lookup(self, refs) -> dict[Ref, IndexItem]:
        """The items of these rows: from memory when `entries` was read, else k rows of SQLite."""
        refs = set(refs)
        if "entries" in self.__dict__:  # a server: every item is in memory, found by ref (not a scan per search)
            return {ref: self._by_ref[ref] for ref in refs}
        found: dict[Ref, IndexItem] = {}
        for position in {position for position, _ in refs}:
            rows = [row for p, row in refs if p == position]
            for row, item in self.segments[position].items_at(rows).items():
                found[(position, row)] = item
        if len(found) != len(refs):
            raise CorruptArtifactError(f"index {self.directory} has no items for some rows FAISS returned; {REBUILD}")
        return found

    @_naming_the_rebuild
    def vectors(self, refs: list[Ref]) -> np.ndarray:
        """(len(refs), dim) float32 stored vectors of these rows."""
        if not refs:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self.segments[position].vectors(np.array([row])) for position, row in refs])


def is_index_dir(directory: Path) -> bool:
    return (directory / mf.MANIFEST).is_file()


def missing_index_message(directory: Path, gallery: str | Path = "GALLERY_DIR", model: str | Path = "RUN", purpose: str = "") -> str:
    """Why there is no index at `directory` (`purpose`: " to prune"…) and the command that builds one
    there, naming a copy left by an interrupted swap if any."""
    build = command(gallery, "--model", model, "--out", directory)
    leftovers = sorted(directory.parent.glob(f".{directory.name}.old-*")) if directory.parent.is_dir() else []
    leftovers = [p for p in leftovers if is_index_dir(p)]
    if leftovers:
        return (f"no index at {directory}{purpose}, but {leftovers[-1]} holds one left by an interrupted update; "
                f"rename it to {directory} or build one with {build}")
    return f"no index at {directory}{purpose}; build one with {build}, or give the folder of an existing index"


def load_index(directory: str | Path, full: bool = False) -> LoadedIndex:
    """Load and validate an index. `full` (updates): the FAISS indexes are read later, when needed,
    into memory rather than mapped; queries (`full=False`) read or map them now."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file, not an index folder; pass the folder `siamcli index` wrote")
    if not is_index_dir(directory):
        raise UserError(missing_index_message(directory))
    with naming_the_rebuild(directory):
        return _load(directory, full)


def _load(directory: Path, full: bool) -> LoadedIndex:
    record = mf.read_manifest(directory)
    manifest = record.to_json()
    deleted = read_tombstones(directory, manifest)
    segments = []
    for entry in record.all_segments:
        segment = Segment(number=entry.number, directory=directory / entry.name if entry.name else directory, rows=entry.rows,
                          record=entry, deleted=deleted.get(entry.number, np.zeros(0, np.int64)), mmap=not full,
                          galleries=galleries_of(manifest))
        _check_segment(segment, manifest, full)
        segments.append(segment)
    live = sum(segment.live for segment in segments)
    if live != record.count:
        raise CorruptArtifactError(f"index {directory} is inconsistent: its segments hold {live} live rows, the manifest "
                                   f"{record.count}; {REBUILD}")
    return LoadedIndex(directory=directory, record=record, segments=segments)


def _check_segment(segment: Segment, manifest: dict, full: bool) -> None:
    names = tuple(name for name in mf.SEGMENT_FILES if name in segment.files or name != mf.EMBEDDINGS_FILE)
    mf.verify_files(segment.directory, segment.files, names, hash_max_bytes=QUERY_HASH_MAX_BYTES)
    segment.check_items()
    if segment.deleted.size and segment.deleted[-1] >= segment.rows:
        raise CorruptArtifactError(f"the tombstones of {segment.directory} name row {segment.deleted[-1]} of {segment.rows}; "
                                   f"{REBUILD}")
    if not full:
        index = segment.index
        if index.d != manifest["embedding_dim"]:
            raise CorruptArtifactError(f"index {segment.directory / mf.INDEX_FILE} has dimension {index.d} but the manifest says "
                                       f"{manifest['embedding_dim']}; {REBUILD}")
    if not segment.stores_vectors_in_index:
        (rows, dim), _ = vector_file.read_shape(segment.directory / mf.EMBEDDINGS_FILE)
        if rows != segment.rows or dim != manifest["embedding_dim"]:
            raise CorruptArtifactError(f"{segment.directory / mf.EMBEDDINGS_FILE} is ({rows}, {dim}), expected "
                                       f"({segment.rows}, {manifest['embedding_dim']}); {REBUILD}")


def galleries_of(manifest: dict) -> list[str]:
    """The gallery folders the index spans (stored paths are relative to them)."""
    galleries = manifest.get("galleries") or ([manifest["gallery"]] if manifest.get("gallery") else [])
    if not isinstance(galleries, list) or not all(isinstance(g, str) for g in galleries):
        raise CorruptArtifactError(f"the index manifest's galleries is not a list of folders; {REBUILD}")
    return galleries


def read_tombstones(directory: Path, manifest: dict) -> dict[int, np.ndarray]:
    """{segment number: sorted rows deleted} from the manifest's tombstone file (empty when none)."""
    record = manifest.get("deleted")
    if not record:
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or "/" in record["file"]:
        raise CorruptArtifactError(f"{directory / mf.MANIFEST}: deleted is not a tombstone record; {REBUILD}")
    mf.verify_files(directory, {record["file"]: record}, (record["file"],), hash_max_bytes=QUERY_HASH_MAX_BYTES)
    try:
        pairs = np.load(directory / record["file"], allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptArtifactError(f"{directory / record['file']} is not a tombstone array ({exc}); {REBUILD}") from exc
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype.kind != "i":
        raise CorruptArtifactError(f"{directory / record['file']} is not an (n, 2) integer array; {REBUILD}")
    return {int(number): np.unique(pairs[pairs[:, 0] == number, 1].astype(np.int64)) for number in np.unique(pairs[:, 0])}


def verify_all_files(loaded: LoadedIndex) -> None:
    """Hash every file in full, whatever its size: a rebuild reads them all anyway, and must not copy bit rot."""
    for segment in loaded.segments:
        names = tuple(name for name in mf.SEGMENT_FILES if name in segment.files)
        mf.verify_files(segment.directory, segment.files, names)


def check_model(manifest: dict, model_path: Path, fingerprint: str, directory: Path) -> None:
    """The model must be the one the index was built with (same sha256)."""
    if fingerprint != manifest["model_fingerprint"]:
        raise UserError(
            f"model {model_path} is not the model index {directory} was built with "
            f"(fingerprint {fingerprint[:12]}… ≠ {str(manifest['model_fingerprint'])[:12]}…); its vectors would not be comparable: "
            f"use that model, or rebuild the index with {rebuild_command(directory, model=model_path)}"
        )
