"""Pixels in and out of the service: uploads made ready for the model, gallery thumbnails.

Uploads go through the CLI's decoder (`decode_bytes`: same formats, same refusals of
truncated files and decompression bombs) and the pipeline's resize, so an uploaded file gives
exactly the pixels `siamcli query FILE` would feed the model (a batched resize gives the same
pixels as one image at a time). Decoding runs on a thread pool, never on the event loop.

Thumbnails are re-encoded JPEGs of indexed files only (the URL carries an id, never a path),
served while the file still has the content that was indexed: a file changed or removed since
is refused rather than shown beside a similarity that was computed from other pixels.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import unicodedata
from collections import OrderedDict

import numpy as np
from PIL import Image

from siamcli.data.decode import DecodeError, decode_bytes, decode_image
from siamcli.index.items import IndexItem, content_hash
from siamcli.models.embed import resize_batch

THUMBNAIL_QUALITY = 85  # JPEG quality of thumbnails


SHRINK_ABOVE = 4  # uploads over this many times the model's pixels are resized when decoded


def decode_upload(data: bytes, name: str, image_size: int) -> np.ndarray:
    """An upload as uint8 (h, w, 3) pixels, or DecodeError with the decoder's reason.

    Resizing waits for the batch (`resize_batch`, on the model thread: TensorFlow's thread pool
    is not fought over while a forward pass runs), except for an image over SHRINK_ABOVE times
    the model's pixels, resized here at once to (S, S, 3) float32, so the queue never holds
    more than a few model-sized images per upload, whatever was sent. (Resized again with its
    batch, it stays the same: a resize to its own size changes no pixel.)
    """
    image = decode_bytes(data, name)
    if image.shape[0] * image.shape[1] > SHRINK_ABOVE * image_size * image_size:
        return resize_batch([image], image_size)[0]
    return image


def upload_name(filename: str | None, position: int) -> str:
    """A printable name for an upload (its base name, no control characters, at most 200 chars)."""
    name = os.path.basename((filename or "").replace("\\", "/"))
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:200]
    return name or f"upload-{position + 1}"


class GalleryFileError(Exception):
    """An indexed file that cannot be shown now; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Thumbnails:
    """JPEG thumbnails of indexed items, at most `size` px on a side; the last `capacity` kept."""

    def __init__(self, capacity: int = 512):
        self.capacity = capacity
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, item: IndexItem, size: int) -> bytes:
        key = (item.path, item.sha256, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = self._render(item, size)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return data

    def _render(self, item: IndexItem, size: int) -> bytes:
        try:
            regular = stat.S_ISREG(os.stat(item.path).st_mode)
        except OSError:
            regular = False
        if not regular:
            raise GalleryFileError(404, f"the gallery file of item {item.id} is gone; run `siamcli index GALLERY --prune`")
        if item.sha256 and content_hash(item.path) != item.sha256:
            raise GalleryFileError(409, f"the gallery file of item {item.id} changed since it was indexed; run `siamcli index GALLERY --append`")
        try:
            pixels = decode_image(item.path)
        except DecodeError as exc:
            raise GalleryFileError(404, f"the gallery file of item {item.id} does not decode now: {exc.reason}") from exc
        image = Image.fromarray(pixels)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY)
        return buffer.getvalue()
