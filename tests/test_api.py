"""The notebook API (`import siamcli`): every docstring example runs, and importing it stays light.

The examples run as doctests from a scratch folder that holds the repository's sample_data/ and
a tiny run `runs/notebook` (32 px, from scratch, one frozen epoch, half the people held out)
with its index over the 108 gallery photos, made once here through the API itself.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DATA, write_test_calibration
from PIL import Image

import siamcli
import siamcli.api

EXAMPLES = [test for test in doctest.DocTestFinder().find(siamcli.api, "siamcli.api") if test.examples]
PUBLIC = [name for name in siamcli.api.__all__ if name not in {"TrainConfig", "EvaluateOptions", "IndexOptions", "UserError"}]


@pytest.fixture(scope="module")
def notebook_folder(tmp_path_factory):
    """A folder with sample_data/ and runs/notebook (trained and indexed); the examples' cwd."""
    folder = tmp_path_factory.mktemp("notebook")
    os.symlink(SAMPLE_DATA, folder / "sample_data")
    before = os.getcwd()
    os.chdir(folder)
    try:
        siamcli.train("sample_data/gallery", out="runs/notebook", weights="none", image_size=32, embedding_dim=16,
                      frozen_epochs=1, finetune_epochs=0, steps_per_epoch=2, val_fraction=0.5)
        siamcli.build_index("sample_data/gallery", run="runs/notebook")
    finally:
        os.chdir(before)
    return folder


def test_every_public_function_and_class_has_a_runnable_example():
    documented = {test.name.split(".")[2] for test in EXAMPLES}
    assert set(PUBLIC) <= documented, f"no example in: {sorted(set(PUBLIC) - documented)}"


@pytest.mark.train  # notebook_folder trains a run
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example_runs(example, notebook_folder, monkeypatch):
    monkeypatch.chdir(notebook_folder)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output: list[str] = []
    runner.run(example, out=output.append)
    assert runner.failures == 0, "".join(output)


def test_import_siamcli_loads_no_tensorflow_and_the_api_resolves_lazily():
    script = (
        "import sys, siamcli\n"
        "assert 'tensorflow' not in sys.modules and 'siamcli.api' not in sys.modules\n"
        "siamcli.load_run, siamcli.embed, siamcli.open_index, siamcli.TrainConfig\n"
        "assert 'tensorflow' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
        "assert siamcli.EvaluateOptions().ks == (1, 5, 10)\n"
        "assert set(siamcli.__all__) <= set(dir(siamcli))\n"
        "try:\n    siamcli.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_options_are_checked_with_the_engine_s_checks(tmp_path):
    with pytest.raises(siamcli.UserError, match="unknown option imagesize"):
        siamcli.train(tmp_path, imagesize=32)
    with pytest.raises(siamcli.UserError, match="^image_size must be at least 32"):
        siamcli.train(tmp_path, image_size=8)
    with pytest.raises(siamcli.UserError, match="either config"):
        siamcli.train(tmp_path, config=siamcli.TrainConfig(data_dir=str(tmp_path)))


# ---- images as a notebook holds them, and an Index that stays loaded (issue 21, finding 7) ------
def _data(run: Path) -> Path:
    return Path(json.loads((run / "config.json").read_text())["data_dir"])


def _photo(run: Path, identity: int = 0, number: int = 0) -> str:
    return str(_data(run) / f"id_{identity}" / f"img_{number}.png")


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def tiny_index(tiny_run, tmp_path_factory) -> Path:
    """tiny_run's 30 images indexed with its model, outside the run (which stays read-only)."""
    out = tmp_path_factory.mktemp("tiny_index") / "index"
    siamcli.build_index(_data(tiny_run), run=tiny_run, out=out)
    return out


def test_arrays_are_rgb_0_255_and_0_1_floats_are_refused(tiny_run):
    run = siamcli.load_run(tiny_run)
    path = _photo(tiny_run)
    pixels = _pixels(path)
    by_file = run.embed(path)
    np.testing.assert_allclose(run.embed(pixels), by_file, atol=1e-6)  # one (h, w, 3) uint8 image
    np.testing.assert_allclose(run.embed(pixels.astype(np.float32)), by_file, atol=1e-6)  # floats 0–255
    with pytest.raises(siamcli.UserError, match="multiply by 255"):
        run.embed(pixels / 255.0)  # the model would see a nearly black image
    with pytest.raises(siamcli.UserError, match=r"^image 1 holds floats in 0–1"):
        run.embed([pixels, pixels / 255.0])
    with pytest.raises(siamcli.UserError, match=r"^images\[1\] holds floats in 0–1"):
        run.embed(np.stack([pixels, pixels / 255.0]))
    with pytest.raises(siamcli.UserError, match="the model takes RGB 0–255"):
        run.embed(pixels * 2.0)
    assert run.embed(np.zeros((20, 20, 3), np.float32)).shape == (1, 16)  # black is black in either range


def test_lists_of_arrays_of_several_sizes_and_pil_images_embed_as_each_alone(tiny_run, tmp_path):
    run = siamcli.load_run(tiny_run)
    path = _photo(tiny_run)
    small = _pixels(path)
    tall = np.asarray(Image.fromarray(small).resize((29, 53)))
    # A PIL image embeds as its file, which siamcli decodes upright with transparency over black.
    transparent = tmp_path / "transparent.png"
    Image.fromarray(np.dstack([small, np.where(np.arange(40) < 20, 0, 255).astype(np.uint8)[None].repeat(40, 0)])).save(transparent)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    Image.fromarray(tall).save(rotated, exif=exif, quality=95)
    rows = run.embed([small, tall, Image.open(path), Image.open(transparent), Image.open(rotated), path])
    alone = [run.embed(small[None]), run.embed(tall[None]), run.embed(path), run.embed(transparent), run.embed(rotated), run.embed(path)]
    np.testing.assert_allclose(rows, np.concatenate(alone), atol=1e-5)
    np.testing.assert_allclose(run.embed(Image.open(rotated)), run.embed(rotated), atol=1e-5)
    assert not np.allclose(run.embed(rotated), run.embed(tall), atol=1e-4)  # the rotation matters to the model
    with pytest.raises(siamcli.UserError, match=r"^image 1 is of type int; give images as paths"):
        run.embed([path, 3])


def test_search_takes_pil_images_arrays_and_mixed_lists(tiny_run, tiny_index):
    index = siamcli.open_index(tiny_index, run=tiny_run)
    path = _photo(tiny_run)
    hits = index.search([path, _pixels(path), Image.open(path)], k=1)
    assert hits["query"].tolist() == [path, 1, 2]  # a file by its path, an in-memory image by its position
    assert [Path(p).resolve() for p in hits["path"]] == [Path(path).resolve()] * 3
    assert (hits["similarity"] > 0.9999).all()
    alone = index.search(Image.open(path), k=2)
    assert alone["query"].tolist() == [0, 0] and Path(alone.loc[0, "path"]).resolve() == Path(path).resolve()


def test_a_query_file_that_does_not_decode_is_left_out_with_a_warning(tiny_run, tiny_index, tmp_path):
    index = siamcli.open_index(tiny_index, run=tiny_run)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="broken.png"):
        hits = index.search([_photo(tiny_run), str(broken)], k=1)
    assert hits["query"].tolist() == [_photo(tiny_run)]
    with pytest.raises(siamcli.UserError, match="none of the query images could be read"):
        index.search(str(broken))


def _truncated_png(folder: Path) -> Image.Image:
    """A PIL image opened from the first half of a PNG: Pillow reads its pixels only when asked."""
    path = folder / "half.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:3000])
    return Image.open(path)


def _flags_outside_backticks(message: str) -> list[str]:
    return re.findall(r"--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", message))


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda run, index, tmp: siamcli.open_index(index, run=run).search(_photo(run), k=0), "k must be at least 1, got 0"),
        (lambda run, index, tmp: siamcli.open_index(index, run=run).search(_photo(run), batch_size=0), "batch_size must be at least 1"),
        (lambda run, index, tmp: siamcli.load_run(run).embed(_photo(run), batch_size=0), "batch_size must be at least 1"),
        (lambda run, index, tmp: siamcli.train(tmp, image_size=8), "image_size must be at least 32"),
        (lambda run, index, tmp: siamcli.train(tmp, batch_size=12, images_per_identity=5),
         "batch_size (12) must be a multiple of images_per_identity (5)"),
        (lambda run, index, tmp: siamcli.train(tmp, image_size="32"), "image_size must be an int, got '32'"),
        (lambda run, index, tmp: siamcli.evaluate(run, ks=()), "ks needs at least one value"),
        (lambda run, index, tmp: siamcli.build_index(_data(run), run=run, out=tmp / "i", batch_size=0), "batch_size must be at least 1"),
        (lambda run, index, tmp: siamcli.build_index(_data(run), run=run, out=tmp / "i", force=True, append=True),
         "force=True rebuilds the index from scratch; it cannot be combined with append=True or prune=True"),
        (lambda run, index, tmp: siamcli.load_run(tmp / "gone"), "run {tmp}/gone not found"),
        (lambda run, index, tmp: siamcli.evaluate(run, options="fast"), "options takes EvaluateOptions(...), not a str"),
        (lambda run, index, tmp: siamcli.open_index(index).search(np.full((1, 16), np.nan)), "query vectors hold NaN"),
        (lambda run, index, tmp: siamcli.embed(_truncated_png(tmp), run=run), "image 0 (a PIL image) cannot be read"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), _photo(run), threshold=2),
         "threshold 2.0 is not a cosine similarity; give a value from -1 to 1"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), _photo(run), threshold="0.5"),
         "threshold must be a number or None, got '0.5'"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_data(run), _photo(run)), "image a is the folder {data}; give one image file"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), [_photo(run)]), "image b is of type list; give one image"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), np.zeros((2, 8, 8, 3), np.uint8)), "image b is 2 images"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_pixels(_photo(run)) / 255.0, _photo(run)), "image a holds floats in 0–1"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), tmp / "gone.png"), "cannot read image {tmp}/gone.png: file not found"),
        (lambda run, index, tmp: siamcli.load_run(run).verify(_photo(run), _truncated_png(tmp)), "image b (a PIL image) cannot be read"),
    ],
    ids=["search k", "search batch_size", "embed batch_size", "train image_size", "train batch_size", "train type",
         "evaluate ks", "index batch_size", "index force", "load_run", "evaluate options", "nan vectors", "truncated PIL",
         "verify threshold range", "verify threshold type", "verify folder", "verify list", "verify batch", "verify 0-1 floats",
         "verify missing file", "verify truncated PIL"],
)
def test_errors_name_the_api_s_keywords_not_the_cli_s_flags(tiny_run, tiny_index, tmp_path, call, expected):
    with pytest.raises(siamcli.UserError) as raised:
        call(tiny_run, tiny_index, tmp_path)
    message = str(raised.value)
    assert message.startswith(expected.format(tmp=tmp_path, data=_data(tiny_run))), message
    assert not _flags_outside_backticks(message), message


def test_build_index_with_a_shard_writes_the_partial_as_the_cli_does(tiny_run, tmp_path):
    part = siamcli.build_index(_data(tiny_run), run=tiny_run, out=tmp_path / "part", shard="1/2", batch_size=8)
    assert (part.shard, part.shards) == (1, 2) and part.count == part.stop - part.start > 0
    with pytest.raises(siamcli.UserError, match="^shard takes I/N"):
        siamcli.build_index(_data(tiny_run), run=tiny_run, out=tmp_path / "bad", shard="half")


def test_index_keeps_its_model_and_faiss_index_between_searches_and_reads_an_update(tiny_run, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(_data(tiny_run), gallery)
    siamcli.build_index(gallery, run=tiny_run, out=tmp_path / "index")
    index = siamcli.open_index(tmp_path / "index", run=tiny_run)
    query = str(gallery / "id_0" / "img_0.png")
    index.search(query, k=1)
    loaded, model = index.loaded, index.query_model
    for _ in range(3):
        index.search([query, _pixels(query)], k=2)
        index.search(np.ones((1, 16), np.float32), k=2)
    assert index.loaded is loaded and index.query_model is model  # read once, not per search
    # An update since is seen at the next search: the index read again, the model (same file) kept.
    added = gallery / "id_1" / "added.png"
    Image.fromarray(np.rot90(_pixels(query)).copy()).save(added)
    siamcli.build_index(gallery, run=tiny_run, out=tmp_path / "index", append=True)
    hits = index.search(str(added), k=1)
    assert len(index) == 31 and index.loaded is not loaded and index.query_model is model
    assert Path(hits.loc[0, "path"]).resolve() == added.resolve() and hits.loc[0, "similarity"] > 0.9999


# ---- Run.verify (issue 23) ----------------------------------------------------------------------
def test_verify_takes_any_api_image_and_decides_as_siamcli_verify(tiny_run, tmp_path):
    from test_index_cli import invoke

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("model.keras", "config.json", "split.json"):
        shutil.copy(tiny_run / name, run_dir / name)
    run = siamcli.load_run(run_dir)
    photo, other = _photo(tiny_run, 0, 0), _photo(tiny_run, 1, 0)
    for second in (photo, Image.open(photo), _pixels(photo), _pixels(photo).astype(np.float32)):
        same = run.verify(photo, second)
        assert same.similarity == pytest.approx(1.0, abs=1e-5) and same.match is None and same.threshold is None
    assert same.reason.startswith("no match decision: not calibrated") and "threshold=T" in same.reason
    assert not _flags_outside_backticks(same.reason), same.reason
    verdict = run.verify(photo, other)
    cli = json.loads(invoke("verify", photo, other, "--model", run_dir, "--json").stdout)
    assert verdict.similarity == pytest.approx(cli["similarity"], abs=1e-6) and verdict.to_json()["similarity"] == verdict.similarity
    assert {k: v for k, v in verdict.to_json().items() if k != "similarity"} == {k: v for k, v in cli.items() if k != "similarity"}
    # A calibration written after the run was loaded applies at the next call, with its rates.
    between = (verdict.similarity + 1) / 2
    write_test_calibration(run_dir, threshold=2 - 2 * between)
    matched, refused = run.verify(photo, Image.open(photo)), run.verify(photo, other)
    assert (matched.match, refused.match) == (True, False) and refused.similarity == verdict.similarity
    assert matched.threshold == pytest.approx(between) and matched.threshold_source == "calibration" and matched.reason == ""
    assert (matched.far, matched.far_ci95, matched.frr, matched.frr_ci95) == (0.01, (0.0, 0.02), 0.01, (0.0, 0.02))
    given = run.verify(photo, other, threshold=-1)
    assert (given.match, given.threshold, given.threshold_source, given.far, given.frr) == (True, -1.0, "option", None, None)
    write_test_calibration(run_dir, threshold=2 - 2 * between, reliable=False)
    unreliable = run.verify(photo, photo)
    assert unreliable.match is None and "not reliable (measured on 2 identities" in unreliable.reason


def test_decode_pil_converts_an_opened_image_as_a_file_is_decoded(tmp_path):
    from siamcli.data.decode import decode_image, decode_pil

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: rotate 90° counter-clockwise to view
    files = {
        "rotated.jpg": (Image.fromarray(pixels), {"exif": exif, "quality": 95}),
        "transparent.png": (Image.fromarray(np.dstack([pixels, rng.integers(0, 256, (30, 20), dtype=np.uint8)])), {}),
        "grey16.png": (Image.fromarray(rng.integers(0, 65536, (30, 20), dtype=np.uint16)), {}),
        "palette.gif": (Image.fromarray(pixels).convert("P"), {}),
    }
    for name, (image, options) in files.items():
        image.save(tmp_path / name, **options)
        with Image.open(tmp_path / name) as opened:
            decoded = decode_pil(opened)
        assert decoded.dtype == np.uint8 and decoded.shape[2] == 3, name
        assert np.array_equal(decoded, decode_image(str(tmp_path / name))), name
    assert decode_image(str(tmp_path / "rotated.jpg")).shape == (20, 30, 3)  # upright: the EXIF rotation applied
