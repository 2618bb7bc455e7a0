"""Decoding one image file into 8-bit RGB, whatever it is.

Pillow does the decoding: one decoder for every format keeps embeddings consistent between
training, indexing and querying, and it is the one that honours EXIF orientation and knows
16-bit, palette, CMYK and animated files. The contract is narrow on purpose: a file either
becomes a (height, width, 3) uint8 array or raises `DecodeError` with a reason the caller
reports by name. Files are hostile input, so no other exception escapes.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

# A declared size past this is refused from the header, before any pixel is allocated
# (decompression bombs). At 4 bytes a pixel plus the conversions, a few hundred MB at most.
MAX_PIXELS = 50_000_000
# Only the formats the scanner lists as images; also keeps Pillow from trying its exotic
# plugins on hostile bytes (EPS would even start Ghostscript).
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")  # JPEG covers MPO

# Pillow warns on sizes between its limit and twice it (raising past that); every such image
# is over MAX_PIXELS, so the warning only precedes a refusal we report ourselves. Silenced once
# here, as warnings.catch_warnings is not thread-safe and decoding runs on tf.data's threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class DecodeError(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def decode_image(path: str) -> np.ndarray:
    """Return the image at `path` as a (height, width, 3) uint8 array, upright, RGB."""
    return _decode(path, lambda: _open_regular_file(path))


def decode_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """The same decoder for bytes already in memory (an HTTP upload); `name` is used in errors."""
    if not data:
        raise DecodeError(name, "empty file (0 bytes)")
    return _decode(name, lambda: io.BytesIO(data))


def decode_pil(image: Image.Image) -> np.ndarray:
    """An opened PIL image as the decoder makes every file: (height, width, 3) uint8 RGB, upright
    (EXIF orientation applied), transparent pixels over black, 16-bit and float greyscale scaled.
    Pillow's own errors (a truncated file read lazily) pass through: the caller names the image."""
    return _to_rgb8(ImageOps.exif_transpose(image), image.format)  # exif_transpose: a loaded copy


def _decode(path: str, opener) -> np.ndarray:
    """Decode what `opener()` opens; every failure becomes a DecodeError naming `path`."""
    try:
        with opener() as file, Image.open(file, formats=FORMATS) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DecodeError(path, f"declared size {width}x{height} is over {MAX_PIXELS:,} pixels")
            if min(width, height) < 1:
                raise DecodeError(path, "image has no pixels")
            image.seek(0)  # animated GIF/WebP/TIFF/MPO: the first frame
            return decode_pil(image)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(path, f"too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise DecodeError(path, "not a readable image (no JPEG, PNG, BMP, GIF, WebP, TIFF or PNM data)") from exc
    except FileNotFoundError as exc:
        raise DecodeError(path, "broken link" if os.path.islink(path) else "file not found") from exc
    except PermissionError as exc:
        raise DecodeError(path, "permission denied") from exc
    except MemoryError as exc:
        raise DecodeError(path, "out of memory while decoding") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError(path, "symlink loop") from exc
        raise DecodeError(path, f"corrupt or truncated image ({exc})") from exc
    except (ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(path, f"corrupt or truncated image ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 — any other parser failure is still a bad file, not a crash
        raise DecodeError(path, f"decoder failed ({type(exc).__name__}: {exc})") from exc


def _open_regular_file(path: str):
    """The file opened for reading, refused unless it is a non-empty regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer, and fstat
    on the open descriptor leaves no gap between checking and reading.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(path, f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size == 0:
            raise DecodeError(path, "empty file (0 bytes)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _to_rgb8(image: Image.Image, source_format: str | None) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or (mode == "I" and source_format == "PPM"):
        # 16-bit greyscale (PPM's 16-bit is mode "I", scaled to 65535 by Pillow): scale to
        # 8 bits instead of clipping, which is what Pillow's convert would do.
        grey = np.asarray(image).astype(np.float32) * (255.0 / 65535.0)
    elif mode in ("I", "F"):
        grey = _rescale_unknown_range(np.asarray(image).astype(np.float32), is_float=mode == "F")
    else:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            # Transparent pixels become black, like the dark backgrounds of most datasets.
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    grey8 = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey8[:, :, None], 3, axis=2)


def _rescale_unknown_range(values: np.ndarray, is_float: bool) -> np.ndarray:
    """32-bit integer or float greyscale (TIFF) onto 0–255; the file does not say its range.

    Floats within [0, 1] are taken as normalised, values within [0, 255] as 8-bit, within
    [0, 65535] as 16-bit; anything else (negative, larger) is stretched from min to max.
    NaN and infinities would otherwise turn into arbitrary bytes.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.float32)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    if is_float and lo >= 0 and hi <= 1:
        return values * 255.0
    if lo >= 0 and hi <= 255:
        return values
    if lo >= 0 and hi <= 65535:
        return values * (255.0 / 65535.0)
    return (values - lo) * (255.0 / max(hi - lo, 1e-12))

