"""Scanning rules and decoding, on real files written in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from siamcli.data.decode import DecodeError, decode_image
from siamcli.data.scan import describe_skipped, scan_folder
from siamcli.errors import UserError


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "data"
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    _save(root / "alice" / "a.png", rgb)
    _save(root / "alice" / "b.JPG", rgb, format="JPEG")  # upper-case extension
    _save(root / "alice" / "grey.png", rgb[:, :, 0])  # greyscale
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    _save(root / "bob" / "rgba.png", rgba)
    _save(root / "bob" / "c.png", rgb)
    (root / "bob" / "notes.txt").write_text("not an image")
    (root / "bob" / ".hidden.png").write_bytes(b"")
    good = (root / "alice" / "a.png").read_bytes()
    (root / "carol").mkdir()
    (root / "carol" / "broken.jpg").write_bytes(good[: len(good) // 3])  # claims to be an image
    _save(root / "dave" / "only.png", rgb)  # a single-image identity
    (root / "empty").mkdir()
    _save(root / "stray.png", rgb)  # not in an identity folder
    return root


def test_scan_keeps_images_and_names_every_skipped_file(messy):
    result = scan_folder(messy)
    found = {(item.label, item.path.split("/")[-1]) for item in result.items}
    assert found == {
        ("alice", "a.png"), ("alice", "b.JPG"), ("alice", "grey.png"),
        ("bob", "rgba.png"), ("bob", "c.png"), ("carol", "broken.jpg"), ("dave", "only.png"),
    }
    reasons = {s.path.split("/")[-1]: s.reason for s in result.skipped}
    assert "notes.txt" in reasons and "not an image" in reasons["notes.txt"]
    assert "hidden" in reasons[".hidden.png"]
    assert "empty" in reasons["empty"]
    assert "identity folder" in reasons["stray.png"]
    warning = describe_skipped(result.skipped)
    assert "notes.txt" in warning and "stray.png" in warning and "\n" not in warning


def test_gallery_scan_accepts_a_flat_folder(messy):
    result = scan_folder(messy, labelled=False)
    assert any(item.label == "" and item.path.endswith("stray.png") for item in result.items)


def test_scan_rejects_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_decode_turns_every_mode_into_8bit_rgb(messy, tmp_path):
    assert decode_image(str(messy / "alice" / "grey.png")).shape == (20, 24, 3)
    assert decode_image(str(messy / "bob" / "rgba.png")).dtype == np.uint8
    deep = np.full((8, 8), 65535, np.uint16)
    deep[0, 0] = 0
    _save(tmp_path / "deep.png", deep)
    decoded = decode_image(str(tmp_path / "deep.png"))
    assert decoded.shape == (8, 8, 3) and decoded[1, 1, 0] == 255 and decoded[0, 0, 0] == 0


def test_decode_honours_exif_orientation(tmp_path):
    array = np.zeros((10, 30, 3), np.uint8)  # wide
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert decode_image(str(tmp_path / "rotated.jpg")).shape == (30, 10, 3)


def test_corrupt_file_raises_decode_error_with_reason(messy):
    with pytest.raises(DecodeError) as info:
        decode_image(str(messy / "carol" / "broken.jpg"))
    assert info.value.reason


def test_layout_hints_name_only_what_is_really_there(tmp_path):
    from siamcli.data.scan import check_identity_layout

    root = tmp_path / "data"
    rgb = np.zeros((8, 8, 3), np.uint8)
    for split, person in (("valid", "ann"), ("valid", "ben"), ("training", "ann"), ("training", "cid")):
        _save(root / split / person / "1.png", rgb)
    with pytest.raises(UserError, match=r"\(training/, valid/\), each holding identity folders: point train at .*/training$"):
        check_identity_layout(scan_folder(root))
    _save(root / "dora" / "1.png", rgb)  # one real identity beside them: not a folder of splits
    check_identity_layout(scan_folder(root))
    flat = tmp_path / "flat"
    _save(flat / "a.png", rgb)
    (flat / "empty_identity").mkdir()
    with pytest.raises(UserError, match=r"^1 image at the root of .*flat and no identity sub-folders"):
        check_identity_layout(scan_folder(flat))
    _save(flat / "eve" / "1.png", rgb)  # images beside identity folders: skipped, named by the usual warning
    check_identity_layout(scan_folder(flat))
