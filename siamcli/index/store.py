"""Loading an index directory and proving its files belong together.

Every check here turns a damaged, truncated or mismatched index into a CorruptArtifactError
(one line, exit 2) before FAISS or numpy read a byte of it, so a bad index is never a crash
and never a wrong answer:

  * manifest.json parses and has the required keys;
  * every file it lists has the recorded size and sha256 (truncation, bit rot, hand edits) —
    with one exception for queries, below;
  * items.csv (and hashes.csv) have the right columns, unique integer ids, same order;
  * index.faiss reads, holds `count` vectors of `embedding_dim`, by inner product;
  * rows in items.csv = ntotal = manifest count (= rows of embeddings.npy when loaded).

Queries of big indexes (`load_index(full=False)`):

  * IVF-family indexes (ivf, ivfpq) are memory-mapped (`faiss_index.read_index(mmap=True)`,
    IO_FLAG_MMAP_IFC): a query process holds the pages its queries touch, not the whole
    index, and the kernel can drop them again. Updates (`full=True`) read the index into
    memory, since they add to it and a mapped index is read-only. The build swaps whole
    directories (rename), so a mapped file is never rewritten under a running query.
  * A file over QUERY_HASH_MAX_BYTES (256 MiB: ≈ 2.5·10^5 vectors of Flat or ivfpq, 10^6 of sq8, at d = 256)
    is checked by size only at query time. Hashing it would read every byte — at 10^7
    vectors, 10 GB per `siamcli query`, which is what mapping it avoids. Truncation, a
    partial copy or an appended tail is still refused (size), and so is a file FAISS cannot
    parse; a same-size corruption inside a big file is caught by the full sha256 every update
    (`siamcli index --append/--prune`, full=True) runs, not by a query. Files up to the limit,
    and every file of an update, are hashed in full as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.index import faiss_index
from siamcli.index import manifest as mf
from siamcli.index import vectors as vector_file
from siamcli.index.items import IndexItem, read_items

QUERY_HASH_MAX_BYTES = 256 << 20  # query-time loads hash files up to this size; bigger ones: size only
MMAP_TYPES = ("ivf", "ivfpq")  # index types a query process memory-maps


@dataclass
class LoadedIndex:
    directory: Path
    manifest: dict
    items: list[IndexItem]  # row i ↔ FAISS row i
    index: object  # faiss.Index with the manifest's search parameters applied

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def embeddings_path(self) -> Path:
        return self.directory / mf.EMBEDDINGS_FILE


def is_index_dir(directory: Path) -> bool:
    return (directory / mf.MANIFEST).is_file()


def missing_index_message(directory: Path) -> str:
    """Why there is no index at `directory`, naming a copy left by an interrupted swap if any."""
    leftovers = sorted(directory.parent.glob(f".{directory.name}.old-*")) if directory.parent.is_dir() else []
    leftovers = [p for p in leftovers if is_index_dir(p)]
    if leftovers:
        return (f"no index at {directory}, but {leftovers[-1]} holds one left by an interrupted update; "
                f"rename it to {directory} or rebuild with `siamcli index GALLERY`")
    return f"no index at {directory}; build one with `siamcli index GALLERY_DIR` (or pass --index DIR)"


def load_index(directory: str | Path, full: bool = False) -> LoadedIndex:
    """Load and validate an index. `full` also verifies hashes.csv and embeddings.npy (updates need them)."""
    directory = Path(directory)
    if not directory.exists():
        raise UserError(missing_index_message(directory))
    if not directory.is_dir():
        raise UserError(f"{directory} is a file, not an index folder; pass the folder `siamcli index` wrote")
    manifest = mf.read_manifest(directory)
    names = mf.DATA_FILES if full else (mf.INDEX_FILE, mf.ITEMS_FILE)
    _verify(directory, manifest, names, full)
    items = read_items(directory, with_hashes=full)
    mmap = not full and manifest.get("index_type") in MMAP_TYPES
    index = faiss_index.read_index(directory / mf.INDEX_FILE, mmap=mmap)
    faiss = faiss_index.faiss_module()
    problems = []
    if index.d != manifest["embedding_dim"]:
        problems.append(f"index.faiss has dimension {index.d} but the manifest says {manifest['embedding_dim']}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        problems.append("index.faiss does not search by inner product")
    if index.ntotal != len(items) or index.ntotal != manifest["count"]:
        problems.append(f"index.faiss holds {index.ntotal} vectors, items.csv {len(items)} rows, the manifest {manifest['count']}")
    if full:
        (rows, dim), _ = vector_file.read_shape(directory / mf.EMBEDDINGS_FILE)
        if rows != len(items) or dim != manifest["embedding_dim"]:
            problems.append(f"embeddings.npy is ({rows}, {dim}), expected ({len(items)}, {manifest['embedding_dim']})")
    if problems:
        raise CorruptArtifactError(f"index {directory} is inconsistent: {'; '.join(problems)}; rebuild it with `siamcli index GALLERY --force`")
    params = manifest.get("search_params") or {}
    if not isinstance(params, dict):
        raise CorruptArtifactError(f"{directory / mf.MANIFEST}: search_params is not an object; rebuild the index with --force")
    faiss_index.set_search_params(index, params)
    return LoadedIndex(directory=directory, manifest=manifest, items=items, index=index)


def _verify(directory: Path, manifest: dict, names: tuple[str, ...], full: bool) -> None:
    """Size and sha256 of each file; at query time, size only for a file past QUERY_HASH_MAX_BYTES."""
    for name in names:
        record = manifest["files"].get(name)
        path = directory / name
        if not full and isinstance(record, dict) and isinstance(record.get("bytes"), int) and record["bytes"] > QUERY_HASH_MAX_BYTES:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = None
            if size == record["bytes"] and path.is_file():
                continue  # big and the right size: hashed in full by the next update, not by every query
        mf.verify_files(directory, manifest, (name,))  # every check, and its one-line error


def check_model(manifest: dict, model_path: Path, fingerprint: str, directory: Path) -> None:
    """The model must be the one the index was built with (same sha256)."""
    if fingerprint != manifest["model_fingerprint"]:
        raise UserError(
            f"model {model_path} is not the model index {directory} was built with "
            f"(fingerprint {fingerprint[:12]}… ≠ {str(manifest['model_fingerprint'])[:12]}…); its vectors would not be comparable: "
            f"use that model, or rebuild the index with `siamcli index GALLERY --model {model_path} --force`"
        )
