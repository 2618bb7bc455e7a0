"""Decoding one image file into 8-bit RGB, whatever it is.

Pillow does the decoding: one decoder for every format keeps embeddings consistent between
training, indexing and querying, and it is the one that honours EXIF orientation and knows
16-bit, palette, CMYK and animated files. Anything that fails raises `DecodeError` with a
reason; callers skip and report it, never crash on it.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

# A declared size past this is refused before any pixel is decoded (decompression bombs).
MAX_PIXELS = 50_000_000
# Smaller than this is not a photo to learn from; the backbone needs at least a little signal.
MIN_SIDE = 2


class DecodeError(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def decode_image(path: str) -> np.ndarray:
    """Return the image at `path` as a (height, width, 3) uint8 array, upright, RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise DecodeError(path, f"declared size {width}x{height} is over {MAX_PIXELS:,} pixels")
                if min(width, height) < 1:
                    raise DecodeError(path, "image has no pixels")
                image.seek(0)  # animated GIF/WebP/TIFF: the first frame
                image = ImageOps.exif_transpose(image)
                image.load()
                return _to_rgb8(image)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(path, f"too large to decode safely ({exc})") from exc
    except FileNotFoundError as exc:
        raise DecodeError(path, "file not found") from exc
    except PermissionError as exc:
        raise DecodeError(path, "permission denied") from exc
    except Image.UnidentifiedImageError as exc:
        raise DecodeError(path, "not a readable image") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc})") from exc


def _to_rgb8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping (Pillow's convert clips).
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if (mode != "I" or values.max(initial=0) > 255) else 255.0
        grey = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        lo, hi = float(values.min(initial=0)), float(values.max(initial=1))
        grey = np.round((values - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, like the dark backgrounds of most datasets.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array)
