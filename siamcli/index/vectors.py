"""Streaming (count, dim) float32 `.npy` files: written batch by batch, read chunk by chunk.

The embeddings of a gallery may not fit twice in memory, so they go to disk as they are
computed and are read back in fixed-size chunks to build the index. The writer reserves a
header big enough for the largest count it may hold and rewrites it, with the same length,
to the true count on close: the result is an ordinary `.npy` file (`np.load` reads it, no
pickle: `allow_pickle=False` everywhere).

Reading is numpy's memory map (`np.load(mmap_mode="r")`, after `read_shape` has checked the
file), opened afresh for each chunk and dropped once the chunk is copied out: only that
chunk's pages are ever mapped, so a 10^7 × 256 file (10 GB) is never resident as a whole, not
even as page-cache pages counted in the process's RSS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from siamcli.errors import CorruptArtifactError
from siamcli.index.hints import REBUILD

CHUNK_ROWS = 4096  # rows per read when streaming a file back: 4 MiB at dim 256, next to nothing beside the index
_MAGIC = b"\x93NUMPY\x01\x00"  # .npy format 1.0


def _header(count: int, dim: int, length: int | None = None) -> bytes:
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (count, dim)
    # magic (8) + header length field (2) + text + padding + newline: a multiple of 64 bytes.
    base = len(_MAGIC) + 2 + len(text) + 1
    total = length if length is not None else -(-base // 64) * 64
    if total < base or total - len(_MAGIC) - 2 > 0xFFFF:
        raise ValueError("npy header does not fit its reserved length")
    body = text + " " * (total - base) + "\n"
    return _MAGIC + (total - len(_MAGIC) - 2).to_bytes(2, "little") + body.encode("latin1")


class VectorWriter:
    """Append (n, dim) float32 rows to a `.npy` file; `close()` fixes the header's count."""

    def __init__(self, path: str | os.PathLike, dim: int, capacity: int):
        self.path = Path(path)
        self.dim = int(dim)
        self.count = 0
        self._header_length = len(_header(max(capacity, 1), self.dim))
        self._handle = open(self.path, "wb")
        self._handle.write(_header(0, self.dim, self._header_length))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype="<f4")
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) rows, got {rows.shape}")
        self._handle.write(rows.tobytes())
        self.count += len(rows)

    def close(self) -> None:
        if self._handle.closed:
            return
        self._handle.seek(0)
        self._handle.write(_header(self.count, self.dim, self._header_length))
        self._handle.flush()
        self._handle.close()

    def __enter__(self) -> "VectorWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_shape(path: str | os.PathLike) -> tuple[tuple[int, int], int]:
    """((count, dim), offset of the data) of a float32 C-order `.npy` file, or CorruptArtifactError."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = reader(handle)
            offset = handle.tell()
    except FileNotFoundError as exc:
        raise CorruptArtifactError(f"{path} is missing; {REBUILD}") from exc
    except (ValueError, OSError, SyntaxError) as exc:
        raise CorruptArtifactError(f"{path} is not a valid embeddings file ({exc}); {REBUILD}") from exc
    if len(shape) != 2 or fortran or dtype != np.dtype("<f4"):
        raise CorruptArtifactError(f"{path} does not hold a (count, dim) float32 array; {REBUILD}")
    expected = offset + shape[0] * shape[1] * 4
    if path.stat().st_size != expected:
        raise CorruptArtifactError(f"{path} is truncated or padded ({path.stat().st_size} bytes, expected {expected}); {REBUILD}")
    return (int(shape[0]), int(shape[1])), offset


def iter_chunks(path: str | os.PathLike, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, (m, dim) float32 array, an in-memory copy) over the file, chunk by chunk."""
    (count, _), _ = read_shape(path)
    for start in range(0, count, chunk_rows):
        yield start, np.array(_mapped(path)[start : start + chunk_rows])


def read_rows(path: str | os.PathLike, rows: np.ndarray) -> np.ndarray:
    """The given rows (any order, repeats allowed) as a (len(rows), dim) float32 array."""
    (count, dim), _ = read_shape(path)
    rows = np.asarray(rows, np.int64).reshape(-1)
    outside = (rows < 0) | (rows >= count)
    if outside.any():
        raise IndexError(f"row {rows[outside][0]} outside 0..{count - 1}")
    out = np.empty((len(rows), dim), np.float32)
    for start in range(0, len(rows), CHUNK_ROWS):  # a fresh map per chunk: at most CHUNK_ROWS rows' pages mapped
        part = slice(start, start + CHUNK_ROWS)
        out[part] = _mapped(path)[rows[part]]
    return out


def _mapped(path: str | os.PathLike) -> np.ndarray:
    """The file as a read-only memory map (call `read_shape` first: it validates what numpy trusts)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)
