"""Reading and writing FAISS index files, and applying a segment's stored search parameters.

`faiss_module` is the one place FAISS is imported (late: `siamcli --help` must not pay for it).
"""

from __future__ import annotations

import os

from siamcli.errors import CorruptArtifactError, UserError
from siamcli.index.hints import REBUILD


def faiss_module():
    """Import FAISS (late: `siamcli --help` must not pay for it)."""
    import faiss

    return faiss



def set_search_params(index, params: dict) -> None:
    """Apply {"efSearch": n} / {"nprobe": n[, "k_factor_rf": f]} to a loaded index (no-op for {})."""
    if not params:
        return
    faiss = faiss_module()
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as exc:
            raise CorruptArtifactError(f"search parameter {name}={value} does not apply to this index; {REBUILD}") from exc


def write_index(index, path: str | os.PathLike) -> None:
    faiss = faiss_module()
    try:
        faiss.write_index(index, os.fspath(path))
    except RuntimeError as exc:
        raise UserError(f"cannot write {path}: {str(exc).splitlines()[-1][:160]}; free disk space or fix permissions") from exc


def read_index(path: str | os.PathLike, mmap: bool = False):
    """Read index.faiss, or CorruptArtifactError (never a crash) when it is damaged.

    `mmap` maps the file instead of reading it (`IO_FLAG_MMAP_IFC`): the inverted lists'
    codes and ids and the flat storage (ivfpq's re-ranking vectors) become read-only views of
    the page cache, so only the pages a query touches are read. The index must not be added
    to. (FAISS 1.15.1 refuses IO_FLAG_MMAP | IO_FLAG_MMAP_IFC; IO_FLAG_MMAP alone maps the
    lists as OnDiskInvertedLists but reads the flat storage — 4·d bytes a vector — into RAM.)
    """
    faiss = faiss_module()
    try:
        return faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except (RuntimeError, MemoryError, OverflowError) as exc:
        raise CorruptArtifactError(
            f"index file {path} is damaged or truncated ({str(exc).strip().splitlines()[-1][-120:]}); {REBUILD}"
        ) from exc
