"""Property tests for `decode_image`: whatever the bytes, an image or a DecodeError.

Three sources of files: random bytes (bare, or behind a real format's magic so the parser gets
past identification), valid images damaged by truncation and overwrites, and valid images of
every mode, size 1–64 and format, which must decode to (h, w, 3) uint8 — exactly where the
format is lossless.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from siamcli.data.decode import DecodeError, decode_image

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK")
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


def _decodes_or_refuses(path, *, count: bool = True) -> np.ndarray | None:
    """The contract: a (h, w, 3) uint8 array, or DecodeError with a reason; anything else fails.

    count: tally outcomes for `pytest --hypothesis-show-statistics` (only inside @given).
    """
    try:
        image = decode_image(str(path))
    except DecodeError as error:
        assert error.reason and error.path == str(path)
        if count:
            event("refused: " + error.reason.split(" (")[0])
        return None
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    assert image.flags.c_contiguous
    if count:
        event("decoded")
    return image


def _png_ihdr(width, height, depth, colour) -> bytes:
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    _png_ihdr(7, 5, 8, 2),  # a valid header: the parser reaches the chunk stream
    _png_ihdr(3, 3, 16, 0),
    _png_ihdr(4, 4, 8, 3),  # palette colour type, palette possibly missing
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\xff\xd8\xff\xdb",
    b"GIF87a\x05\x00\x05\x00",
    b"GIF89a\x05\x00\x05\x00\xf0\x00\x00",
    b"BM",
    b"RIFF\x40\x00\x00\x00WEBPVP8 ",
    b"RIFF\x40\x00\x00\x00WEBPVP8L",
    b"II*\x00\x08\x00\x00\x00",
    b"MM\x00*\x00\x00\x00\x08",
    b"P5\n3 2\n255\n",
    b"P6\n2 2\n65535\n",
    b"P1\n4 4\n",
    b"P4\n8 2\n",
]


@SETTINGS
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=4096))
def test_random_bytes_give_an_image_or_a_decode_error(tmp_path, prefix, body):
    path = tmp_path / "random.jpg"
    path.write_bytes(prefix + body)
    _decodes_or_refuses(path)


# ---------------------------------------------------------------- valid images


def _make(mode: str, width: int, height: int, seed: int, wide_range: bool) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (width, height)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width)).astype(bool))
    if mode == "P":
        image = Image.frombytes("P", size, rng.integers(0, 256, width * height, dtype=np.uint8).tobytes())
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return image
    if mode == "I;16":
        return Image.frombytes("I;16", size, rng.integers(0, 65536, width * height).astype("<u2").tobytes())
    if mode == "I":
        high = 2**31 if wide_range else 65536
        return Image.fromarray(rng.integers(-high if wide_range else 0, high, (height, width)).astype(np.int32))
    if mode == "F":
        scale = 1e6 if wide_range else 1.0
        return Image.fromarray((rng.random((height, width)) * scale).astype(np.float32))
    channels = len(Image.getmodebands(mode) * "x")
    return Image.frombytes(mode, size, rng.integers(0, 256, width * height * channels, dtype=np.uint8).tobytes())


def _saves(fmt: str, mode: str) -> bool:
    try:
        _make(mode, 3, 2, 0, False).save(io.BytesIO(), fmt)
        return True
    except (OSError, ValueError, KeyError):
        return False


WRITABLE = [(fmt, mode) for fmt in FORMATS for mode in MODES if _saves(fmt, mode)]
# Lossless pairs whose file keeps the mode; their pixels must come back exactly.
EXACT = {
    ("PNG", m) for m in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16")
} | {("TIFF", m) for m in ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "CMYK")} | {
    ("BMP", m) for m in ("1", "L", "P", "RGB")
}


def _expected(image: Image.Image) -> np.ndarray:
    """What the decoder promises for an in-memory image: alpha over black, 16 bits scaled."""
    if image.mode == "I;16":
        grey = np.round(np.asarray(image).astype(np.float64) * 255 / 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA"):
        rgba = np.asarray(image.convert("RGBA")).astype(np.float64)
        return np.round(rgba[..., :3] * rgba[..., 3:] / 255).astype(np.uint8)
    return np.asarray(image.convert("RGB"))


def test_every_mode_can_be_written_in_some_format():
    assert {mode for _, mode in WRITABLE} == set(MODES)
    assert {fmt for fmt, _ in WRITABLE} == set(FORMATS)


@SETTINGS
@given(
    pair=st.sampled_from(WRITABLE),
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    wide_range=st.booleans(),
)
def test_valid_images_decode_to_their_size_in_8bit_rgb(tmp_path, pair, width, height, seed, wide_range):
    fmt, mode = pair
    image = _make(mode, width, height, seed, wide_range)
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = _decodes_or_refuses(path)
    assert decoded is not None, (fmt, mode, width, height)
    assert decoded.shape == (height, width, 3)
    if pair in EXACT:
        expected = _expected(image)
        # alpha compositing may round either way by one level
        tolerance = 1 if mode in ("RGBA", "LA") else 0
        assert np.abs(decoded.astype(int) - expected).max() <= tolerance, (fmt, mode)


# ---------------------------------------------------------------- damaged images


@SETTINGS
@given(
    pair=st.sampled_from(WRITABLE),
    seed=st.integers(0, 2**32 - 1),
    cut=st.none() | st.floats(0, 1),
    patches=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=16)), max_size=4),
)
def test_damaged_images_give_an_image_or_a_decode_error(tmp_path, pair, seed, cut, patches):
    fmt, mode = pair
    buffer = io.BytesIO()
    _make(mode, 9, 7, seed, False).save(buffer, fmt)
    data = bytearray(buffer.getvalue())
    for where, junk in patches:  # overwrite bytes past the magic: headers, lengths, pixel data
        start = 8 + int(where * (len(data) - 9))
        data[start : start + len(junk)] = junk
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    path = tmp_path / f"damaged.{fmt.lower()}"
    path.write_bytes(bytes(data))
    _decodes_or_refuses(path)


@pytest.mark.parametrize("fmt, mode", WRITABLE)
def test_each_writable_pair_round_trips(tmp_path, fmt, mode):
    """The same check without hypothesis' sampling: every (format, mode) pair at least once."""
    image = _make(mode, 5, 3, 1, False)
    path = tmp_path / f"pair.{fmt.lower()}"
    image.save(path, fmt)
    decoded = _decodes_or_refuses(path, count=False)
    assert decoded is not None and decoded.shape == (3, 5, 3)
