"""Hostile files: each decodes correctly or is skipped with its name and a reason — never a
crash, a hang, or a silently wrong image. Real files, written here."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from siamcli.data.decode import DecodeError, decode_image
from siamcli.data.scan import scan_folder
from siamcli.models.embed import load_pixels


def _png_declaring(width, height):
    """A tiny valid PNG whose header claims width × height (a decompression bomb's header)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture
def hostile(tmp_path):
    root = tmp_path / "data"
    good = root / "ok"
    good.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(good / "a.png")
    bad = root / "bad"
    bad.mkdir()
    png = (good / "a.png").read_bytes()
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, "JPEG")
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a photo")
    (bad / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))
    return root


def test_each_hostile_file_is_refused_with_a_reason(hostile):
    for name in ("truncated.png", "truncated.jpg", "empty.jpg", "text.jpg", "bomb.png"):
        with pytest.raises(DecodeError) as info:
            decode_image(str(hostile / "bad" / name))
        assert info.value.reason, name
    with pytest.raises(DecodeError, match="pixels"):
        decode_image(str(hostile / "bad" / "bomb.png"))


def test_the_pipeline_skips_and_names_them_and_keeps_the_good_image(hostile):
    paths = [str(p) for p in sorted((hostile / "bad").iterdir())] + [str(hostile / "ok" / "a.png")]
    loaded = load_pixels(paths, 32)
    assert loaded.images.shape == (1, 32, 32, 3)
    assert {os.path.basename(f.path) for f in loaded.failures} == {"truncated.png", "truncated.jpg", "empty.jpg", "text.jpg", "bomb.png"}


def test_odd_but_valid_images_decode_correctly(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    assert decode_image(str(tmp_path / "one.png")).tolist() == [[[10, 20, 30]]]

    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg", "JPEG", quality=100)
    red = decode_image(str(tmp_path / "cmyk.jpg"))
    assert red.shape == (4, 4, 3) and red[..., 0].min() > 200 and red[..., 1:].max() < 60

    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = decode_image(str(tmp_path / "anim.gif"))
    assert first[0, 0, 0] > 200 and first[0, 0, 2] < 50  # the first (red) frame

    Image.new("RGB", (5, 3)).save(tmp_path / "png_named.jpg", "PNG")  # the extension lies
    assert decode_image(str(tmp_path / "png_named.jpg")).shape == (3, 5, 3)

    strange = tmp_path / "ü ñ 漢" / "ph oto.png"
    strange.parent.mkdir()
    Image.new("RGB", (2, 2)).save(strange)
    assert decode_image(str(strange)).shape == (2, 2, 3)
    assert load_pixels([str(strange)], 32).images.shape == (1, 32, 32, 3)


def test_scan_survives_symlink_loops_fifos_and_folders_named_like_images(tmp_path):
    root = tmp_path / "data"
    person = root / "person"
    person.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(person / "a.png")
    (person / "loop").symlink_to(person)  # person/loop/loop/... forever
    (person / "dangling.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(person / "pipe.png")  # opening it for reading would block forever
    (person / "folder.jpg").mkdir()
    result = scan_folder(root)
    assert [os.path.basename(i.path) for i in result.items] == ["a.png"]
    reasons = {os.path.basename(s.path): s.reason for s in result.skipped}
    assert "loop" in reasons["loop"]
    assert reasons["dangling.png"] == "broken link"
    assert reasons["pipe.png"] == "not a regular file"


def test_unreadable_files_are_skipped_or_read_as_permissions_allow(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (3, 3)).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything: then it must simply decode
            assert decode_image(str(path)).shape == (3, 3, 3)
        else:
            with pytest.raises(DecodeError, match="permission"):
                decode_image(str(path))
    finally:
        path.chmod(0o644)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00", b"P5\n"]


def _decodes_or_refuses(path):
    try:
        image = decode_image(str(path))
    except DecodeError as error:
        assert error.reason
        return None
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    return image


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_decode_error(tmp_path, prefix, body):
    path = tmp_path / "random.img"
    path.write_bytes(prefix + body)
    _decodes_or_refuses(path)


FORMATS = {"PNG": ("1", "L", "P", "RGB", "RGBA", "LA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
           "BMP": ("1", "L", "P", "RGB"), "GIF": ("L", "P"), "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16", "F"),
           "WEBP": ("RGB", "RGBA")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), width=st.integers(1, 48), height=st.integers(1, 48))
def test_valid_images_of_any_mode_and_size_decode_to_their_size(tmp_path, data, width, height):
    fmt = data.draw(st.sampled_from(sorted(FORMATS)))
    mode = data.draw(st.sampled_from(FORMATS[fmt]))
    seed = data.draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert("RGB").convert(mode) if mode not in ("I;16", "I", "F") else \
        Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)).convert(mode if mode != "I;16" else "I;16")
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, fmt)
    decoded = _decodes_or_refuses(path)
    assert decoded is not None and decoded.shape == (height, width, 3), (fmt, mode)
