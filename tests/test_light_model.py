"""The light model (models/light.py): a run's network as LiteRT plus a NumPy resize, so that
`siamcli query` and `siamcli verify` answer without importing TensorFlow, with model.keras's answers.

Real everything: the tiny untrained run (32 px) converted by the real writer, real image files of
odd sizes and modes written with Pillow, sample_data/, TensorFlow's own resize as the reference,
the CLI in process and in fresh interpreters (the only place "TensorFlow was not imported" means
anything). `give_light_model` is used by test_query_cli.py and test_verify.py too.
"""

from __future__ import annotations

import atexit
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_DATA
from PIL import Image
from test_index_cli import invoke
from test_index_engine import build, copy_run

from siamcli.hashing import file_sha256
from siamcli.models.light import DISABLE_ENV, LIGHT_DIR, LIGHT_FILE, RECORD_FILE, TOLERANCE, open_light_model

pytestmark = pytest.mark.slow  # converts and runs the tiny ResNet50 run

_CONVERTED: dict[str, Path] = {}  # model.keras sha256 → a folder holding its light copy, converted once per test process


def give_light_model(run: Path) -> Path:
    """`run`'s light model, as `siamcli export`, the trainer or `siamcli index` write it: converted
    once per model.keras in this process, then copied into every run holding the same file."""
    from siamcli.models.light_writer import ensure_light_model

    sha = file_sha256(run / "model.keras")
    if sha in _CONVERTED:
        shutil.copytree(_CONVERTED[sha], run / LIGHT_DIR, dirs_exist_ok=True)
    else:
        assert ensure_light_model(run) == run / LIGHT_DIR / LIGHT_FILE
        keep = Path(tempfile.mkdtemp(prefix="siamcli-light-"))
        atexit.register(shutil.rmtree, keep, True)
        _CONVERTED[sha] = Path(shutil.copytree(run / LIGHT_DIR, keep / LIGHT_DIR))
    return run / LIGHT_DIR / LIGHT_FILE


# In a fresh interpreter: the real CLI, in process, then which heavy modules it imported.
WRAPPER = """
import json, sys
from siamcli.cli.app import app
import typer
code = typer.main.get_command(app).main(sys.argv[1:], prog_name="siamcli", standalone_mode=False)
heavy = [name for name in ("tensorflow", "keras", "tf_keras", "siamcli.tf_runtime", "siamcli.models.embed") if name in sys.modules]
sys.stderr.write("IMPORTED " + json.dumps(heavy) + "\\n")
sys.exit(code)
"""


def fresh_cli(*args, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """(the finished process, the heavy modules it imported) of `siamcli ARGS` in a new interpreter."""
    import os

    done = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    marker = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert len(marker) == 1, done.stderr
    return done, json.loads(marker[0][len("IMPORTED "):])


def indexed_light_copy(tiny_run: Path, folder: Path) -> tuple[Path, Path]:
    """(run, data): a copy of the tiny run in `folder`, with its light model and a flat index over its 30 images."""
    run, data = copy_run(tiny_run, folder)
    give_light_model(run)
    build(run, data)
    return run, data


@pytest.fixture(scope="module")
def light_run(tmp_path_factory, tiny_run):
    """indexed_light_copy of the tiny run. Read-only."""
    return indexed_light_copy(tiny_run, tmp_path_factory.mktemp("light"))


@pytest.fixture(scope="module")
def keras_model(light_run):
    from siamcli.models.embedding import load_embedding_model

    return load_embedding_model(light_run[0] / "model.keras")


# ---------------------------------------------------------------- preprocessing

ODD_SHAPES = [(1, 1), (1, 257), (257, 1), (3, 2000), (2000, 3), (7, 9000), (32, 32), (31, 33), (10, 12), (92, 112), (600, 451)]


@pytest.mark.parametrize("size", [32, 64, 224])
def test_the_numpy_resize_is_tensorflows_bit_for_bit(size):
    """The model's resize (tf.image.resize, bilinear, antialias=True), shrinking and enlarging,
    1×N, N×1, long strips, its own size: the same float32 values, not merely close ones."""
    from siamcli.data.antialias_resize import resize_like_model
    from siamcli.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    rng = np.random.default_rng(size)
    for shape in ODD_SHAPES:
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        expected = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True).numpy()
        np.testing.assert_array_equal(resize_like_model(image, size), expected, err_msg=f"{shape} → {size}")
    floats = rng.uniform(0, 255, (45, 70, 3))  # float input (the notebook API's arrays) as the model casts it
    expected = tf.image.resize(tf.cast(floats, tf.float32), (size, size), method="bilinear", antialias=True).numpy()
    np.testing.assert_array_equal(resize_like_model(floats, size), expected)


def write_odd_images(folder: Path) -> list[Path]:
    """Image files of odd sizes and modes: 1×N, N×1, long strips, 1×1, 16-bit grey, CMYK, palette
    with transparency, RGBA, grey, EXIF-rotated, a large JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    noise = lambda h, w, c=3: rng.integers(0, 256, (h, w, c), dtype=np.uint8)  # noqa: E731
    files = {
        "row.png": Image.fromarray(noise(1, 300)), "column.png": Image.fromarray(noise(300, 1)),
        "strip.png": Image.fromarray(noise(4, 2500)), "tower.png": Image.fromarray(noise(2500, 4)),
        "dot.png": Image.fromarray(noise(1, 1)), "grey.png": Image.fromarray(noise(50, 70, 1)[:, :, 0]),
        "rgba.png": Image.fromarray(noise(40, 30, 4), "RGBA"), "cmyk.jpg": Image.fromarray(noise(60, 45, 4), "CMYK"),
        "large.jpg": Image.fromarray(noise(777, 1000)),
    }
    files["deep.png"] = Image.fromarray(rng.integers(0, 65536, (41, 37), dtype=np.uint16))  # 16-bit greyscale
    palette = Image.fromarray(noise(33, 47)).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    files["palette.png"] = palette
    paths = []
    for name, image in files.items():
        image.save(folder / name)
        paths.append(folder / name)
    rotated = Image.fromarray(noise(20, 50))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    rotated.save(folder / "rotated.jpg", exif=exif)
    return [*paths, folder / "rotated.jpg"]


def test_light_embeddings_equal_model_keras_on_sample_data_and_odd_images(light_run, keras_model, tmp_path):
    from siamcli.data.decode import decode_image
    from siamcli.models.embed import embed
    from siamcli.models.light import current_record

    run, _ = light_run
    odd = write_odd_images(tmp_path / "odd")
    assert decode_image(str(tmp_path / "odd" / "rotated.jpg")).shape == (50, 20, 3)  # EXIF applied
    paths = [str(p) for p in sorted(SAMPLE_DATA.rglob("*.png"))] + [str(p) for p in odd]
    assert len(paths) == 120 + len(odd)
    light, why = open_light_model(run, file_sha256(run / "model.keras"))
    assert light is not None, why
    ours, theirs = light.embed(paths, batch_size=16), embed(keras_model, paths, batch_size=16)
    assert ours.kept == theirs.kept == list(range(len(paths))) and not ours.failures
    assert float(np.max(np.abs(ours.vectors - theirs.vectors))) <= TOLERANCE
    record, _ = current_record(run, file_sha256(run / "model.keras"))
    assert record.max_abs_diff <= TOLERANCE and record.image_size == 32 and record.embedding_dim == 16
    assert "1x96" in record.checked_on and "96x1" in record.checked_on  # the writer's own check covered odd sizes too


# ---------------------------------------------------------------- query and verify without TensorFlow


def test_query_and_verify_never_import_tensorflow_when_the_light_model_exists(light_run, tmp_path):
    run, data = light_run
    image = data / "id_4" / "img_1.png"
    done, heavy = fresh_cli("query", image, "--model", run, "--k", "3", "--json")
    assert done.returncode == 0, done.stderr
    assert heavy == [] and "warning" not in done.stderr, done.stderr
    assert [r["label"] for r in json.loads(done.stdout)[0]["results"]] == ["id_4"] * 3
    done, heavy = fresh_cli("verify", image, data / "id_4" / "img_2.png", "--model", run, "--threshold", "0.5", "--json")
    assert done.returncode == 0 and heavy == [], done.stderr
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"a,b,same\n{image},{data / 'id_4' / 'img_2.png'},1\n{image},{data / 'id_0' / 'img_0.png'},0\n", encoding="utf-8")
    done, heavy = fresh_cli("verify", "--pairs", pairs, "--model", run, "--threshold", "0.5", "--scores-json", tmp_path / "s.json")
    assert done.returncode == 0 and heavy == [], done.stderr
    # The test can fail: forced onto TensorFlow, the same command imports it.
    done, heavy = fresh_cli("query", image, "--model", run, "--json", env={DISABLE_ENV: "1"})
    assert done.returncode == 0 and "tensorflow" in heavy
    assert done.stderr.splitlines()[0] == f"warning: embedding with TensorFlow, which takes seconds to start: {DISABLE_ENV} is set"


def query_answers(*args) -> list[list[tuple[int, float]]]:
    result = invoke("query", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return [[(row["id"], row["similarity"]) for row in answer["results"]] for answer in json.loads(result.stdout)]


def assert_same_answers(light: list, tensorflow: list) -> None:
    """The same ids in the same order, similarities within 1e-4."""
    assert [[i for i, _ in answer] for answer in light] == [[i for i, _ in answer] for answer in tensorflow]
    gaps = [abs(a - b) for x, y in zip(light, tensorflow) for (_, a), (_, b) in zip(x, y)]
    assert max(gaps) <= 1e-4, max(gaps)


def test_light_and_tensorflow_give_the_same_answers_on_every_query_of_the_test_galleries(light_run, tmp_path, monkeypatch):
    run, data = light_run
    faces = copy_run(run, tmp_path)[0]  # the same model over sample_data's gallery, its 12 held-out photos as queries
    shutil.copytree(run / LIGHT_DIR, faces / LIGHT_DIR)
    build(faces, SAMPLE_DATA / "gallery")
    galleries = [(["--model", run], [data]), (["--model", faces], [SAMPLE_DATA / "queries"])]
    for options, queries in galleries:
        light = query_answers(*queries, *options, "--k", "5")
        monkeypatch.setenv(DISABLE_ENV, "1")
        tensorflow = query_answers(*queries, *options, "--k", "5")
        monkeypatch.delenv(DISABLE_ENV)
        assert len(light) in (30, 12)
        assert_same_answers(light, tensorflow)
    pairs = tmp_path / "pairs.csv"
    lines = [f"{data}/id_{i}/img_0.png,{data}/id_{j}/img_{k}.png" for i in range(6) for j in range(6) for k in (1, 3)]
    pairs.write_text("a,b\n" + "\n".join(lines) + "\n", encoding="utf-8")
    verdicts = []
    for forced in (False, True):
        if forced:
            monkeypatch.setenv(DISABLE_ENV, "1")
        result = invoke("verify", "--pairs", pairs, "--model", run, "--threshold", "0.5", "--json")
        assert result.exit_code == 0, result.stderr
        verdicts.append(np.array([row["similarity"] for row in json.loads(result.stdout)]))
    assert len(verdicts[0]) == 72 and float(np.max(np.abs(verdicts[0] - verdicts[1]))) <= 1e-4


def test_without_the_light_model_one_line_says_so_and_its_command_writes_it(light_run, tmp_path):
    run = copy_run(light_run[0], tmp_path)[0]  # no light/ yet: a run trained by an earlier release
    shutil.copytree(light_run[0] / "index", run / "index")
    image = light_run[1] / "id_0" / "img_0.png"
    for command in (["query", image, "--model", run, "--json"], ["verify", image, image, "--model", run, "--threshold", "0.5"]):
        result = invoke(*command)
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert warnings == [f"warning: embedding with TensorFlow, which takes seconds to start: {run / LIGHT_DIR} holds no light model; "
                            f"write it with `siamcli export {run} --format litert --force`"], result.stderr
    elsewhere = invoke("export", run, "--format", "litert", "--out", tmp_path / "served")
    assert elsewhere.exit_code == 0 and not (run / LIGHT_DIR).exists()  # --out elsewhere: the run folder is left alone
    hint = warnings[0].split("`")[1]
    export = invoke(*shlex.split(hint)[1:])  # the command as printed
    assert export.exit_code == 0, export.stderr
    assert f"light model (query and verify without TensorFlow): {run / LIGHT_DIR / LIGHT_FILE}" in export.stdout
    done, heavy = fresh_cli("query", image, "--model", run, "--json")
    assert done.returncode == 0 and heavy == [] and "warning" not in done.stderr, done.stderr


# ---------------------------------------------------------------- belonging to its model.keras


def test_a_light_copy_of_another_model_or_damaged_is_ignored_and_rewritten(light_run, keras_model, tmp_path):
    from siamcli.models.light_writer import ensure_light_model

    run = copy_run(light_run[0], tmp_path)[0]
    light = give_light_model(run)
    sha = file_sha256(run / "model.keras")
    record_file = run / LIGHT_DIR / RECORD_FILE
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    model, why = open_light_model(run, sha)
    assert model is None and "made from another model.keras" in why
    # rewritten, from the caller's model when it holds one loaded from that model.keras (the index's, the trainer's)
    assert ensure_light_model(run, model=keras_model) == light and json.loads(record_file.read_text())["model_sha256"] == sha
    assert open_light_model(run, sha)[0] is not None
    light.write_bytes(light.read_bytes()[:-64] + bytes(64))  # damaged after it was recorded
    model, why = open_light_model(run, sha)
    assert model is None and "is not the file light.json recorded" in why


def test_a_retrained_model_keras_is_never_answered_by_the_old_light_copy(light_run, tmp_path):
    """verify reads model.keras's sha256 and takes the light copy only if it was made from it: after
    model.keras is replaced, the answer is the new model's (through TensorFlow, saying so)."""
    from conftest import build_untrained_run

    run, data = copy_run(light_run[0], tmp_path)
    give_light_model(run)
    a, b = data / "id_0" / "img_0.png", data / "id_5" / "img_4.png"
    old = invoke("verify", a, b, "--model", run, "--threshold", "0", "--json")
    other = build_untrained_run(tmp_path / "other", data, val=[], train=[], seed=7)
    new_answer = invoke("verify", a, b, "--model", other, "--threshold", "0", "--json")
    shutil.copy(other / "model.keras", run / "model.keras")  # retrained in place
    after = invoke("verify", a, b, "--model", run, "--threshold", "0", "--json")
    assert after.exit_code == 0 and "made from another model.keras" in after.stderr
    similarity = lambda result: json.loads(result.stdout)["similarity"]  # noqa: E731
    assert similarity(after) == pytest.approx(similarity(new_answer), abs=1e-6)
    assert abs(similarity(after) - similarity(old)) > 1e-3


def test_a_write_killed_before_its_record_leaves_no_light_model(light_run, tmp_path):
    run = copy_run(light_run[0], tmp_path)[0]
    script = "import sys\nfrom siamcli.models.light_writer import ensure_light_model\nensure_light_model(sys.argv[1])\n"
    import os

    killed = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "SIAMCLI_CRASH_AT": "light-before-record"})
    assert killed.returncode == -9, killed.stderr
    assert not (run / LIGHT_DIR).exists()  # only a temporary folder beside it
    assert any(p.name.startswith(f".{LIGHT_DIR}.") for p in run.iterdir())
    assert open_light_model(run, file_sha256(run / "model.keras"))[0] is None
