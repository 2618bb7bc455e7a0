"""Hostile image files (issue 6, item 4), each written for real in tmp_path.

Every input must either decode to the right pixels or be refused with a `DecodeError` (or a
scan skip) whose reason says why — never another exception, a hang, or a wrong image.
"""

import io
import json
import os
import signal
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamcli.data.decode import MAX_PIXELS, DecodeError, decode_image
from siamcli.data.scan import scan_folder

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


# ---------------------------------------------------------------- helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width, height, bit_depth, colour_type, rows: bytes = b"") -> bytes:
    """A PNG built byte by byte (Pillow cannot write 16-bit RGB, nor lie about its size)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def _png16(array: np.ndarray, colour_type: int) -> bytes:
    """array (h, w[, c]) uint16 → 16-bit PNG bytes, filter 0 on every row."""
    height, width = array.shape[:2]
    big_endian = array.astype(">u2").reshape(height, -1)
    rows = b"".join(b"\x00" + row.tobytes() for row in big_endian)
    return _png(width, height, 16, colour_type, rows)


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _refused(path, *, match: str) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(str(path))
    assert match in info.value.reason, info.value.reason
    assert info.value.path == str(path)
    return info.value.reason


@contextmanager
def _no_hang(seconds: int = 5):
    """Fail the test instead of hanging the suite (a FIFO open would block for ever)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- broken files


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.02, 0.25, 0.5, 0.9])
def test_truncated_files_are_refused(tmp_path, fmt, keep):
    data = _encoded(Image.fromarray(RGB), fmt)
    path = _write(tmp_path / f"cut.{fmt.lower()}", data[: max(1, int(len(data) * keep))])
    reason = _refused(path, match="")
    assert "truncated" in reason or "not a readable image" in reason


def test_zero_byte_file_is_refused_and_skipped_by_scan(tmp_path):
    path = _write(tmp_path / "data" / "person" / "empty.jpg", b"")
    _refused(path, match="empty file (0 bytes)")
    result = scan_folder(tmp_path / "data")
    assert result.items == []
    assert {s.reason for s in result.skipped if s.path == str(path)} == {"empty file (0 bytes)"}


def test_text_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is a shopping list, not a photo\n" * 20)
    _refused(path, match="not a readable image")


def test_formats_outside_the_list_are_refused_unopened(tmp_path):
    # EPS would make Pillow start Ghostscript; ICO and TGA are formats siamcli does not claim.
    eps = _write(tmp_path / "eps.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    ico = _write(tmp_path / "ico.png", _encoded(Image.fromarray(RGB), "ICO"))
    tga = _write(tmp_path / "tga.png", _encoded(Image.fromarray(RGB), "TGA"))
    for path in (eps, ico, tga):
        _refused(path, match="not a readable image")


# ---------------------------------------------------------------- decompression bombs


def _jpeg_declaring(width, height) -> bytes:
    data = bytearray(_encoded(Image.new("RGB", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_declaring(width, height) -> bytes:
    data = bytearray(_encoded(Image.new("L", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    descriptor = data.index(b"\x2c")  # image descriptor: left, top, width, height
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


BOMBS = {
    "png_100k.png": (lambda: _png(100_000, 100_000, 8, 2), (100_000, 100_000)),  # past Pillow's limit
    "png_10k.png": (lambda: _png(10_000, 10_000, 8, 2), (10_000, 10_000)),  # Pillow only warns here
    "png_8k.png": (lambda: _png(8_000, 8_000, 8, 2), (8_000, 8_000)),  # under Pillow's limit, over ours
    "jpeg_60k.jpg": (lambda: _jpeg_declaring(60_000, 60_000), (60_000, 60_000)),
    "gif_65k.gif": (lambda: _gif_declaring(65_535, 65_535), (65_535, 65_535)),
}


# Pillow's own warning reaches pytest (which resets warning filters per test); not the CLI.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_declared_sizes_past_memory_are_refused_from_the_header(tmp_path, monkeypatch, name):
    build, size = BOMBS[name]
    path = _write(tmp_path / name, build())
    with monkeypatch.context() as unlimited:
        unlimited.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(path) as image:
            assert image.size == size  # the header really declares it
    assert size[0] * size[1] > MAX_PIXELS
    started = time.perf_counter()
    reason = _refused(path, match="pixels")
    assert time.perf_counter() - started < 1.0  # refused from the header, nothing allocated
    assert "too large" in reason or "declared size" in reason


def test_a_size_under_the_limit_with_no_pixel_data_is_refused_as_truncated(tmp_path):
    path = _write(tmp_path / "hollow.png", _png(3_000, 3_000, 8, 2, b""))
    _refused(path, match="truncated")


# ---------------------------------------------------------------- odd but valid images


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "TIFF", "WEBP", "JPEG", "PPM"])
def test_one_pixel_images_decode(tmp_path, fmt):
    colour = (200, 30, 90)
    path = tmp_path / f"one.{fmt.lower()}"
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.new("RGB", (1, 1), colour).save(path, fmt, **options)
    decoded = decode_image(str(path))
    assert decoded.shape == (1, 1, 3) and decoded.dtype == np.uint8
    tolerance = {"JPEG": 12, "GIF": 0}.get(fmt, 0)
    if fmt != "GIF":  # GIF quantises to a palette; exact colour is not promised
        assert np.abs(decoded[0, 0].astype(int) - colour).max() <= tolerance


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 65535, 128 * 257, 255]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    decoded = decode_image(str(path))
    assert decoded[..., 0].tolist() == [[0, 255, 128, 1]]
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 0] == decoded[..., 2]).all()


def test_16bit_rgb_and_rgba_png_keep_their_colours(tmp_path):
    rgb16 = np.array([[[65535, 0, 128 * 257], [1000, 30000, 65535]]], np.uint16)
    path = _write(tmp_path / "rgb16.png", _png16(rgb16, colour_type=2))
    assert decode_image(str(path)).tolist() == (rgb16 >> 8).astype(np.uint8).tolist()

    rgba16 = np.array([[[65535, 0, 0, 65535], [0, 65535, 0, 0]]], np.uint16)  # opaque red, clear green
    path = _write(tmp_path / "rgba16.png", _png16(rgba16, colour_type=6))
    assert decode_image(str(path)).tolist() == [[[255, 0, 0], [0, 0, 0]]]

    la16 = np.array([[[65535, 65535], [65535, 0]]], np.uint16)  # opaque white, clear white
    path = _write(tmp_path / "la16.png", _png16(la16, colour_type=4))
    assert decode_image(str(path)).tolist() == [[[255, 255, 255], [0, 0, 0]]]


def test_16bit_pgm_and_tiff_are_scaled(tmp_path):
    values = np.array([[0, 65535, 257 * 100]], np.uint16)
    pgm = _write(tmp_path / "deep.pgm", b"P5\n3 1\n65535\n" + values.astype(">u2").tobytes())
    assert decode_image(str(pgm))[..., 0].tolist() == [[0, 255, 100]]
    dark = _write(tmp_path / "dark.pgm", b"P5\n2 1\n65535\n" + np.array([0, 255], ">u2").tobytes())
    assert decode_image(str(dark))[..., 0].tolist() == [[0, 1]]  # 16-bit near-black stays dark
    tiff = tmp_path / "deep.tif"
    Image.fromarray(values).save(tiff)
    assert decode_image(str(tiff))[..., 0].tolist() == [[0, 255, 100]]


def test_32bit_and_float_tiffs_map_onto_8_bits(tmp_path):
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)  # normalised
    Image.fromarray(floats, "F").save(tmp_path / "unit.tif")
    assert decode_image(str(tmp_path / "unit.tif"))[..., 0].tolist() == [[0, 128, 255]]

    odd = np.array([[np.nan, -np.inf, -10.0, 30.0, np.inf]], np.float32)  # stretched, NaN → darkest
    Image.fromarray(odd, "F").save(tmp_path / "odd.tif")
    assert decode_image(str(tmp_path / "odd.tif"))[..., 0].tolist() == [[0, 0, 0, 255, 255]]

    wide = np.array([[-(2**20), 0, 2**20]], np.int32)
    Image.fromarray(wide, "I").save(tmp_path / "wide.tif")
    assert decode_image(str(tmp_path / "wide.tif"))[..., 0].tolist() == [[0, 128, 255]]


def test_cmyk_jpeg_colours_match_pillows_rgb_conversion(tmp_path):
    cmyk = Image.frombytes("CMYK", (10, 12), RNG.integers(0, 256, 10 * 12 * 4, dtype=np.uint8).tobytes())
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, "JPEG", quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
        expected = np.asarray(image.convert("RGB"))
    assert np.array_equal(decode_image(str(path)), expected)

    cyan = tmp_path / "cyan.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(cyan, "JPEG", quality=100)
    pixel = decode_image(str(cyan))[4, 4].astype(int)
    assert pixel[0] < 20 and pixel[1] > 235 and pixel[2] > 235  # cyan, not its inverse


def test_cmyk_tiff_decodes_like_pillow(tmp_path):
    cmyk = Image.frombytes("CMYK", (5, 4), RNG.integers(0, 256, 5 * 4 * 4, dtype=np.uint8).tobytes())
    cmyk.save(tmp_path / "cmyk.tif")
    assert np.array_equal(decode_image(str(tmp_path / "cmyk.tif")), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF", "PNG"])  # PNG: APNG
def test_animated_files_give_their_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (6, 5), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / f"anim.{fmt.lower()}"
    options = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 3
    decoded = decode_image(str(path))
    assert decoded.shape == (5, 6, 3)
    assert (decoded[..., 0] > 240).all() and (decoded[..., 1:] < 15).all()


# Orientation → what a viewer does to the stored pixels (numpy, on (row, column) arrays).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # 90° clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),  # 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt):
    stored = np.zeros((16, 32, 3), np.uint8)  # wide; quadrants red, green / blue, white
    stored[:8, :16] = (255, 0, 0)
    stored[:8, 16:] = (0, 255, 0)
    stored[8:, :16] = (0, 0, 255)
    stored[8:, 16:] = (255, 255, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    image.save(path, fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {}))
    with Image.open(path) as raw:
        as_stored = np.asarray(raw.convert("RGB"))
    decoded = decode_image(str(path))
    expected = ORIENTATIONS[orientation](as_stored)
    assert decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)  # the same pixels, moved, not re-sampled
    red_corner = ORIENTATIONS[orientation](stored)[0, 0]
    assert np.abs(decoded[0, 0].astype(int) - red_corner).max() <= 8  # and the right way round


def test_nonsense_orientation_is_ignored(tmp_path):
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 42
    image.save(tmp_path / "odd.png", exif=exif)
    assert np.array_equal(decode_image(str(tmp_path / "odd.png")), RGB)


def test_transparent_pixels_become_black(tmp_path):
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "p.png", transparency=bytes([0, 128, 255]))  # tRNS: clear, half, opaque
    decoded = decode_image(str(tmp_path / "p.png")).astype(int)
    assert decoded[0, 0].tolist() == [0, 0, 0]
    assert abs(decoded[0, 1, 1] - 128) <= 1 and decoded[0, 1, 0] == 0
    assert decoded[0, 2].tolist() == [0, 0, 255]

    la = Image.fromarray(np.array([[[200, 0], [200, 255], [200, 128]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    decoded = decode_image(str(tmp_path / "la.png")).astype(int)
    assert decoded[0, 0].tolist() == [0, 0, 0] and decoded[0, 1].tolist() == [200, 200, 200]
    assert abs(decoded[0, 2, 0] - 100) <= 1

    keyed = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8))
    keyed.save(tmp_path / "keyed.png", transparency=(255, 0, 0))  # RGB colour key
    assert decode_image(str(tmp_path / "keyed.png")).tolist() == [[[0, 0, 0], [0, 0, 255]]]


@pytest.mark.parametrize(
    "name, fmt", [("png_bytes.jpg", "PNG"), ("jpeg_bytes.png", "JPEG"), ("gif_bytes.bmp", "GIF"), ("bmp.tif", "BMP")]
)
def test_a_lying_extension_still_decodes(tmp_path, name, fmt):
    path = _write(tmp_path / name, _encoded(Image.fromarray(RGB), fmt))
    decoded = decode_image(str(path))
    assert decoded.shape == RGB.shape
    if fmt in ("PNG", "BMP"):
        assert np.array_equal(decoded, RGB)


# ---------------------------------------------------------------- paths and the file system


def test_unicode_and_spaces_in_paths(tmp_path):
    path = tmp_path / "data" / "ü ñ 漢" / "ph oto.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(RGB).save(path)
    assert np.array_equal(decode_image(str(path)), RGB)
    result = scan_folder(tmp_path / "data")
    assert [(i.label, i.path) for i in result.items] == [("ü ñ 漢", str(path))]


def test_symlink_loops_end_and_are_reported(tmp_path):
    root = tmp_path / "data"
    person = root / "person"
    person.mkdir(parents=True)
    Image.fromarray(RGB).save(person / "a.png")
    (person / "self").symlink_to(person)  # person/self/self/... for ever
    (person / "up").symlink_to(root)  # back to the root, and round again
    (person / "everything").symlink_to("/")  # would walk the whole machine
    (person / "ping.jpg").symlink_to(person / "pong.jpg")  # a file link cycle
    (person / "pong.jpg").symlink_to(person / "ping.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(RGB).save(elsewhere / "b.png")
    (root / "linked").symlink_to(elsewhere)  # a fine linked identity...
    (root / "linked_again").symlink_to(elsewhere)  # ...linked twice
    with _no_hang(10):
        result = scan_folder(root)
    assert sorted((i.label, os.path.basename(i.path)) for i in result.items) == [("linked", "b.png"), ("person", "a.png")]
    reasons = {os.path.relpath(s.path, root): s.reason for s in result.skipped}
    assert reasons["person/self"] == f"symlink loop (links back to {person})"
    assert reasons["person/up"] == f"symlink loop (links back to {root})"
    assert reasons["person/everything"] == "symlink loop (links back to /)"
    assert reasons["person/ping.jpg"] == reasons["person/pong.jpg"] == "symlink loop"
    assert reasons["linked_again"] == "folder already scanned through another link"
    _refused(person / "ping.jpg", match="symlink loop")


def test_broken_symlink(tmp_path):
    root = tmp_path / "data"
    (root / "person").mkdir(parents=True)
    link = root / "person" / "gone.png"
    link.symlink_to(tmp_path / "deleted.png")
    result = scan_folder(root)
    assert result.items == [] and [(s.path, s.reason) for s in result.skipped][0] == (str(link), "broken link")
    _refused(link, match="broken link")
    _refused(tmp_path / "never-existed.png", match="file not found")


def test_a_folder_named_like_an_image(tmp_path):
    root = tmp_path / "data"
    folder = root / "person" / "x.jpg"
    folder.mkdir(parents=True)
    Image.fromarray(RGB).save(folder / "inside.png")  # a real image inside counts for person
    result = scan_folder(root)
    assert [(i.label, i.path) for i in result.items] == [("person", str(folder / "inside.png"))]
    _refused(folder, match="not a regular file (a folder)")


def test_fifo_and_devices_named_like_images_never_block(tmp_path):
    root = tmp_path / "data"
    person = root / "person"
    person.mkdir(parents=True)
    fifo = person / "pipe.png"
    os.mkfifo(fifo)  # no writer: a plain open() would wait for ever
    (person / "zero.png").symlink_to("/dev/zero")  # endless bytes
    (person / "null.jpg").symlink_to("/dev/null")
    with _no_hang(5):
        result = scan_folder(root)
        assert result.items == []
        assert {os.path.basename(s.path): s.reason for s in result.skipped} == {
            "null.jpg": "not a regular file", "pipe.png": "not a regular file", "zero.png": "not a regular file",
            "person": "empty folder (no images)",
        }
        _refused(fifo, match="not a regular file (a FIFO)")
        _refused(person / "zero.png", match="not a regular file (a device)")


# ---------------------------------------------------------------- permissions


def _can_read(path: Path) -> bool:
    """As root, chmod 000 does not stop reading; ask the kernel rather than assume."""
    try:
        with open(path, "rb") as file:
            file.read(1)
        return True
    except PermissionError:
        return False


def test_unreadable_file_and_folder(tmp_path):
    root = tmp_path / "data"
    (root / "open").mkdir(parents=True)
    (root / "shut").mkdir()
    Image.fromarray(RGB).save(root / "open" / "locked.png")
    Image.fromarray(RGB).save(root / "shut" / "inside.png")
    (root / "open" / "locked.png").chmod(0)
    (root / "shut").chmod(0)
    try:
        readable = _can_read(root / "open" / "locked.png")
        assert readable == os.access(root / "open" / "locked.png", os.R_OK)
        result = scan_folder(root)
        reasons = {os.path.relpath(s.path, root): s.reason for s in result.skipped}
        found = sorted(os.path.relpath(i.path, root) for i in result.items)
        if readable:  # root: permissions do not apply, so both images are simply read
            assert found == ["open/locked.png", "shut/inside.png"] and reasons == {}
            assert np.array_equal(decode_image(str(root / "open" / "locked.png")), RGB)
        else:
            assert found == []
            assert reasons["open/locked.png"] == "unreadable (permission denied)"
            assert reasons["shut"].startswith("unreadable folder")
            _refused(root / "open" / "locked.png", match="permission denied")
    finally:
        (root / "shut").chmod(0o755)
        (root / "open" / "locked.png").chmod(0o644)


def test_unreadable_for_an_ordinary_user(tmp_path):
    """Run as root, the test above only sees the root case; drop to `nobody` in a child."""
    if os.geteuid() != 0:
        pytest.skip("not root: test_unreadable_file_and_folder already asserted the refused case")
    base = Path(tempfile.mkdtemp(prefix="siamcli-perm-"))  # tmp_path's parents are closed to nobody
    try:
        base.chmod(0o755)
        root = base / "data"
        (root / "open").mkdir(parents=True)
        (root / "shut").mkdir()
        for path in (root / "open" / "fine.png", root / "open" / "locked.png", root / "shut" / "inside.png"):
            Image.fromarray(RGB).save(path)
        for folder in (base, root, root / "open"):
            folder.chmod(0o755)
        (root / "open" / "fine.png").chmod(0o644)
        (root / "open" / "locked.png").chmod(0)
        (root / "shut").chmod(0)
        decode_image(str(root / "open" / "fine.png"))  # load Pillow's plugins while still root
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            outcome = {}
            try:
                os.close(read)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                result = scan_folder(root)
                outcome["items"] = sorted(os.path.relpath(i.path, root) for i in result.items)
                outcome["skipped"] = {os.path.relpath(s.path, root): s.reason for s in result.skipped}
                for name in ("fine.png", "locked.png"):
                    try:
                        outcome[name] = list(decode_image(str(root / "open" / name)).shape)
                    except DecodeError as error:
                        outcome[name] = error.reason
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                outcome["error"] = repr(error)
            finally:
                os.write(write, json.dumps(outcome).encode())
                os._exit(0)
        os.close(write)
        try:
            with _no_hang(60), os.fdopen(read) as pipe:  # a child stuck on a lock held at fork
                outcome = json.loads(pipe.read())
        finally:
            if os.waitpid(child, os.WNOHANG) == (0, 0):
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
        assert "error" not in outcome, outcome
        assert outcome["items"] == ["open/fine.png"]
        assert outcome["skipped"]["open/locked.png"] == "unreadable (permission denied)"
        assert outcome["skipped"]["shut"].startswith("unreadable folder")
        assert outcome["fine.png"] == list(RGB.shape)
        assert outcome["locked.png"] == "permission denied"
    finally:
        for path in (base / "data" / "shut", base / "data" / "open" / "locked.png"):
            if path.exists() or path.is_symlink():
                path.chmod(0o755)
        for dirpath, _, filenames in os.walk(base, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            os.rmdir(dirpath)


# ---------------------------------------------------------------- end to end


def test_the_pipeline_names_every_hostile_file_and_keeps_the_good_ones(tmp_path):
    """Scan + decode as training and indexing do: each file is loaded or named with a reason."""
    from siamcli.models.embed import load_pixels

    root = tmp_path / "data"
    good = {
        "a/ok.png": _encoded(Image.fromarray(RGB), "PNG"),
        "a/one.png": _encoded(Image.new("RGB", (1, 1)), "PNG"),
        "a/lies.jpg": _encoded(Image.fromarray(RGB), "PNG"),
        "ü ñ 漢/ph oto.png": _encoded(Image.fromarray(RGB), "PNG"),
        "b/cmyk.jpg": _encoded(Image.new("CMYK", (9, 9), (0, 255, 255, 0)), "JPEG"),
        "b/grey16.png": _png16(np.full((4, 4), 40000, np.uint16), colour_type=0),
    }
    jpeg = _encoded(Image.fromarray(RGB), "JPEG")
    bad = {
        "a/cut.jpg": jpeg[: len(jpeg) // 2],
        "a/text.jpg": b"hello",
        "b/bomb.png": _png(100_000, 100_000, 8, 2),
        "b/big.png": _png(8_000, 8_000, 8, 2),
    }
    for name, data in {**good, **bad}.items():
        _write(root / name, data)
    _write(root / "b" / "empty.jpg", b"")
    os.mkfifo(root / "b" / "pipe.png")
    (root / "b" / "loop").symlink_to(root)
    result = scan_folder(root)
    scan_reasons = {os.path.relpath(s.path, root): s.reason for s in result.skipped}
    assert scan_reasons == {
        "b/empty.jpg": "empty file (0 bytes)", "b/pipe.png": "not a regular file", "b/loop": f"symlink loop (links back to {root})",
    }
    paths = [item.path for item in result.items]
    with _no_hang(120):
        loaded = load_pixels(paths, 16)
    kept = sorted(os.path.relpath(paths[i], root) for i in loaded.kept)
    assert kept == sorted(good)
    assert loaded.images.shape == (len(good), 16, 16, 3)
    failures = {os.path.relpath(f.path, root): f.reason for f in loaded.failures}
    assert sorted(failures) == sorted(bad) and all(failures.values())
