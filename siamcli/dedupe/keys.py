"""One pass over the files: what dedupe knows of each image.

Per file: the sha256 of its bytes (siamcli.hashing: exact duplicates), its size in bytes and
modification time, its pixel count (the --keep rules), and for the perceptual method a 256-bit
difference hash: imagehash.dhash with hash_size 16 (each bit says whether a pixel of a 17×16
greyscale thumbnail is brighter than its right-hand neighbour), chosen over imagehash's phash,
ahash and whash by measurement (docs/dedupe.md). With the crop check, also a THUMB_SIDE ×
THUMB_SIDE greyscale thumbnail (align.py compares those).

Images are decoded as every other command sees them: siamcli's decoder (data/decode.py: EXIF
orientation applied, transparency over black, 16-bit scaled). A JPEG is decoded at the smallest
scale its DCT allows that still gives THUMB_SIDE pixels a side (Pillow's `draft`: 2–8× faster on
photos, and a hash of 17×16 pixels needs no more) and turned upright as the decoder turns it
(EXIF orientation); any file that path does not read goes through `decode_image`, whose error
names what is wrong. A file that does not decode is skipped and named, never fatal.

Files are read by `workers` processes (forked, where that is safe), else threads; a small folder
here. Memory is O(N): under 100 bytes an image, plus its path.
"""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable, Sequence

import numpy as np

from siamcli.data.scan import Skipped
from siamcli.events import NO_EVENTS, Events
from siamcli.hashing import file_sha256

HASH_SIZE = 16  # imagehash.dhash(image, HASH_SIZE): HASH_SIZE² bits
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_NAME = f"dhash{HASH_SIZE}"
THUMB_SIDE = 64
POOL_MIN = 256  # fewer images than this are read here, without workers
CHUNK = 64  # images a worker process reads per task


@dataclass
class Keys:
    """Columns for the images that were read, in input order (failures left out, and listed)."""

    paths: list[str]
    sha256: np.ndarray  # (n, 32) uint8
    pixels: np.ndarray  # (n,) int64: width × height
    size: np.ndarray  # (n,) int64: bytes
    mtime_ns: np.ndarray  # (n,) int64
    codes: np.ndarray | None = None  # (n, HASH_BITS / 8) uint8: packed dhash bits (perceptual method)
    failures: list[Skipped] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.paths)

    def subset(self, rows: np.ndarray, failures: list[Skipped]) -> "Keys":
        """These rows only, with more failures (images that did not decode later)."""
        return Keys([self.paths[r] for r in rows], self.sha256[rows], self.pixels[rows], self.size[rows], self.mtime_ns[rows],
                    None if self.codes is None else self.codes[rows], [*self.failures, *failures])


def read_keys(paths: Sequence[str], perceptual: bool, workers: int = 1, events: Events = NO_EVENTS,
              thumbs: np.ndarray | None = None) -> Keys:
    """Keys of every path; `perceptual` adds the dhash (decoding each image), else only its header
    is read. `thumbs` (perceptual only): a (len(paths), THUMB_SIDE, THUMB_SIDE) uint8 array that
    receives the thumbnail of each image read, at its row in the Keys."""
    events.stage("reading images", len(paths))
    rows, failures = [], []
    reader = partial(_key_of, perceptual=perceptual, thumbnail=thumbs is not None)
    for path, row in zip(paths, parallel_map(reader, paths, workers, events)):
        if isinstance(row, str):
            failures.append(Skipped(path, row))
            continue
        if thumbs is not None:
            thumbs[len(rows)] = row[-1]
        rows.append((path, *row[:5]))
    if not rows:
        return Keys([], np.zeros((0, 32), np.uint8), *(np.zeros(0, np.int64) for _ in range(3)),
                    np.zeros((0, HASH_BITS // 8), np.uint8) if perceptual else None, failures)
    kept, digests, pixels, sizes, times, codes = zip(*rows)
    return Keys(
        paths=list(kept),
        sha256=np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32),
        pixels=np.array(pixels, np.int64), size=np.array(sizes, np.int64), mtime_ns=np.array(times, np.int64),
        codes=np.frombuffer(b"".join(codes), np.uint8).reshape(-1, HASH_BITS // 8) if perceptual else None,
        failures=failures,
    )


def parallel_map(function: Callable, items: Sequence, workers: int, events: Events) -> Iterable:
    """function(item) for each item, in order: on `workers` forked processes where forking is
    safe (TensorFlow, whose threads a fork would copy mid-flight, is not loaded), else threads;
    on this thread when there are few items."""
    if workers <= 1 or len(items) < POOL_MIN:
        for item in items:
            result = function(item)
            events.advance(1)
            yield result
        return
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        results = pool.map(function, items, chunksize=CHUNK)
    else:
        pool = ThreadPoolExecutor(workers)
        results = pool.map(function, items)
    with pool:
        for result in results:
            events.advance(1)
            yield result


def _key_of(path: str, perceptual: bool, thumbnail: bool = False):
    """(sha256 bytes, pixels, bytes, mtime_ns, dhash bytes or b"", thumbnail or None) of one file,
    or why it cannot be read."""
    from siamcli.data.decode import DecodeError

    try:
        info = os.stat(path)
        digest = bytes.fromhex(file_sha256(path))
        if not perceptual:
            return digest, _header_pixels(path), info.st_size, info.st_mtime_ns, b"", None
        grey, pixels = _grey(path, stat.S_ISREG(info.st_mode))
        thumb = _thumbnail(grey) if thumbnail else None
        return digest, pixels, info.st_size, info.st_mtime_ns, _dhash_bytes(grey), thumb
    except DecodeError as exc:
        return exc.reason
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"


def _grey(path: str, regular: bool):
    """(the image in greyscale, shrunk by an integer factor — a box filter — to at least
    THUMB_SIDE a side, its full pixel count)."""
    from PIL import Image

    from siamcli.data.decode import decode_image

    grey, pixels = (_draft_grey(path) if regular else None) or (None, 0)
    if grey is None:
        grey = Image.fromarray(decode_image(path)).convert("L")
        pixels = grey.width * grey.height
    factor = max(1, min(grey.size) // THUMB_SIDE)
    return (grey.reduce(factor) if factor > 1 else grey), pixels


def _draft_grey(path: str):
    """(greyscale image, full pixel count) of a JPEG decoded at reduced scale; None for any other file or any trouble."""
    from PIL import Image, ImageOps

    from siamcli.data.decode import FORMATS, MAX_PIXELS

    try:
        with Image.open(path, formats=FORMATS) as image:
            width, height = image.size
            if image.format != "JPEG" or not 0 < width * height <= MAX_PIXELS:
                return None
            image.draft("L", (THUMB_SIDE, THUMB_SIDE))
            # what the decoder does to a JPEG (decode_pil): EXIF orientation; then greyscale
            return ImageOps.exif_transpose(image).convert("L"), width * height
    except Exception:  # noqa: BLE001 — decode_image reads it again and says what is wrong
        return None


def _dhash_bytes(grey) -> bytes:
    import imagehash

    return np.packbits(imagehash.dhash(grey, HASH_SIZE).hash.reshape(-1)).tobytes()


def _header_pixels(path: str) -> int:
    """width × height from the file's header (0 when Pillow cannot read one: the embedding pass then names the file)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 — any parser failure: the decoder reports it properly later
        return 0


def _thumbnail(grey) -> np.ndarray:
    from PIL import Image

    return np.asarray(grey.resize((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR, reducing_gap=2.0), np.uint8)
