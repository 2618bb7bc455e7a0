"""`siamcli export`: each format is written by the real CLI, then loaded in a fresh process that
has only that format's runtime (plain TensorFlow; the LiteRT interpreter; onnxruntime) and
cannot import siamcli, and must give the embeddings siamcli gives for the same image files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

# A fresh interpreter in which siamcli (and the listed modules) cannot be imported.
BLOCK = textwrap.dedent(
    """
    import importlib.abc, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    BLOCKED = {blocked!r}
    class _Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(name + " is not installed in this process")
    sys.meta_path.insert(0, _Blocked())
    """
)
TOLERANCE = 1e-4  # what `siamcli export` promises (siamcli.export.check.TOLERANCE)


def _fresh(script: str, *args: str, blocked: tuple[str, ...] = ("siamcli",)) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK.format(blocked=set(blocked)) + textwrap.dedent(script), *map(str, args)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _images(run: Path) -> list[str]:
    config = json.loads((run / "config.json").read_text())
    return sorted(str(p) for p in Path(config["data_dir"]).rglob("*.png"))[:8]


def _siamcli_embeddings(run: Path, images) -> np.ndarray:
    """model.keras's embeddings of image files (or of an array of pixels), as siamcli computes them."""
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    return embed(load_embedding_model(run / "model.keras"), images, batch_size=8).vectors


def _resized_pixels(paths: list[str], size: int) -> np.ndarray:
    """What LiteRT and ONNX take: the images decoded and resized to S×S, float32 (siamcli's pipeline)."""
    from siamcli.models.embed import embedding_stream

    return np.concatenate([batch.pixels.numpy() for batch in embedding_stream(None, paths, batch_size=64, image_size=size)])


def _export(run: Path, out: Path, *flags: str) -> dict:
    """`siamcli export RUN --json` through the CLI in this process (the fresh processes that load
    the files are the point of these tests; a third one per format would only start TensorFlow again)."""
    from typer.testing import CliRunner

    from siamcli.cli.app import app

    done = CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--json", *flags])
    assert done.exit_code == 0, (done.stderr[-3000:], done.exception)
    summary = json.loads(done.stdout)
    assert all(diff <= summary["tolerance"] for diff in summary["max_abs_diff"].values()), summary
    assert json.loads((out / "export.json").read_text())["max_abs_diff"] == summary["max_abs_diff"]
    return summary


def test_savedmodel_embeds_image_bytes_and_pixels_in_plain_tensorflow(tiny_run, tmp_path):
    summary = _export(tiny_run, tmp_path / "sm", "--format", "savedmodel")
    assert {"saved_model.pb", "export.json"} <= set(summary["files"])
    # Each weight stored once (tracking the Keras model in the ExportArchive stored them twice).
    assert summary["files"]["variables/variables.data-00000-of-00001"] < 1.2 * (tiny_run / "model.keras").stat().st_size
    paths = _images(tiny_run)
    _fresh(
        """
        import numpy as np, tensorflow as tf
        from PIL import Image
        model = tf.saved_model.load(sys.argv[1])
        paths = sys.argv[3:]
        data = tf.constant([open(p, "rb").read() for p in paths])
        by_bytes = model.signatures["serving_default"](images=data)["embedding"].numpy()
        pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])  # all 40x40: one batch
        by_pixels = model.signatures["embed_pixels"](pixels=tf.constant(pixels))["embedding"].numpy()
        np.save(sys.argv[2], np.stack([by_bytes, by_pixels]))
        """,
        tmp_path / "sm", tmp_path / "out.npy", *paths,
    )
    by_bytes, by_pixels = np.load(tmp_path / "out.npy")
    expected = _siamcli_embeddings(tiny_run, paths)
    assert np.max(np.abs(by_bytes - expected)) <= TOLERANCE
    assert np.max(np.abs(by_pixels - expected)) <= TOLERANCE


def _held_out(run: Path) -> tuple[list[str], list[str]]:
    """(paths, labels) of the run's held-out images, read from its split.json and data folder."""
    config, split = (json.loads((run / name).read_text()) for name in ("config.json", "split.json"))
    paths = sorted(str(p) for name in split["val"] for p in (Path(config["data_dir"]) / name).glob("*.png"))
    return paths, [Path(p).parent.name for p in paths]


def _map_at_r(vectors: np.ndarray, labels: list[str]) -> float:
    """MAP@R (Musgrave et al., 2020) by brute force, written here to check siamcli's: each image
    ranks all the others by cosine; AP over the first R, R = the other images of its identity."""
    labels = np.asarray(labels)
    scores = []
    for i, vector in enumerate(vectors):
        others = np.delete(np.arange(len(vectors)), i)
        ranked = labels[others[np.argsort(-(vectors[others] @ vector), kind="stable")]] == labels[i]
        r = int(ranked.sum())
        hits = ranked[:r]
        scores.append(float(np.sum(hits * np.cumsum(hits) / np.arange(1, r + 1)) / r))
    return float(np.mean(scores))


# What dynamic-range quantisation may cost in MAP@R on the held-out images: int8 weights move the
# embeddings by about 1e-3 (docs/export.md: −0.0007 on the demo's run); a tenth is a broken model.
QUANTISED_MAP_AT_R_LOSS = 0.05


def test_litert_float_and_quantised_run_in_the_litert_interpreter_alone(tiny_run, tmp_path):
    from siamcli.models.embed import load_pixels

    summary = _export(tiny_run, tmp_path / "lite", "--format", "litert", "--quantize")
    files = summary["files"]
    assert files["model_dynamic_range.tflite"] < files["model.tflite"] / 2
    paths, labels = _held_out(tiny_run)
    assert len(paths) == 10 and len(set(labels)) == 2  # id_4, id_5
    # The held-out images as export checks them (decoded and resized to 32 px, 8-bit), embedded
    # by each .tflite file in a process with the LiteRT interpreter only.
    pixels = load_pixels(paths, 32).images
    np.save(tmp_path / "pixels.npy", pixels.astype(np.float32))
    _fresh(
        """
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
        out = []
        for name in ("model.tflite", "model_dynamic_range.tflite"):
            runner = Interpreter(model_path=sys.argv[1] + "/" + name).get_signature_runner()
            out.append(runner(pixels=np.load(sys.argv[2]))["embedding"])
        np.save(sys.argv[3], np.stack(out))
        assert "tensorflow" not in sys.modules
        """,
        tmp_path / "lite", tmp_path / "pixels.npy", tmp_path / "out.npy", blocked=("siamcli", "tensorflow", "keras"),
    )
    floats, quantised = np.load(tmp_path / "out.npy")
    assert np.max(np.abs(floats - _siamcli_embeddings(tiny_run, pixels))) <= TOLERANCE
    assert np.min(np.sum(quantised * floats, axis=1)) > 0.99  # close, not equal: int8 weights
    # The retrieval cost export reports is the one measured here, and it is small.
    float_map, quantised_map = _map_at_r(floats, labels), _map_at_r(quantised, labels)
    retrieval = summary["quantised"]["retrieval"]
    assert (retrieval["images"], retrieval["identities"]) == (10, 2)
    assert retrieval["float32"]["map_at_r"] == pytest.approx(float_map, abs=1e-6)
    assert retrieval["dynamic_range"]["map_at_r"] == pytest.approx(quantised_map, abs=1e-6)
    assert quantised_map >= float_map - QUANTISED_MAP_AT_R_LOSS, (float_map, quantised_map)


def test_quantize_says_why_retrieval_is_not_measured_on_one_held_out_identity(tiny_run, tmp_path):
    run = tmp_path / "one"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("index*", "export"))
    split = json.loads((run / "split.json").read_text())
    (run / "split.json").write_text(json.dumps({"train": split["train"], "val": ["id_4"]}))
    summary = _export(run, tmp_path / "lite", "--format", "litert", "--quantize")
    assert summary["sample_source"] == "5 held-out images of 1 identity"
    assert summary["quantised"]["retrieval"] is None
    assert summary["quantised"]["retrieval_not_measured"] == "held-out images of 1 identity: retrieval cost needs at least 2 identities"


def test_onnx_runs_in_onnxruntime_alone(tiny_run, tmp_path):
    summary = _export(tiny_run, tmp_path / "onnx", "--format", "onnx")
    assert "model.onnx" in summary["files"]
    paths = _images(tiny_run)
    np.save(tmp_path / "pixels.npy", _resized_pixels(paths, 32))
    _fresh(
        """
        import numpy as np, onnxruntime
        session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
        np.save(sys.argv[3], session.run(["embedding"], {"pixels": np.load(sys.argv[2])})[0])
        assert "tensorflow" not in sys.modules
        """,
        tmp_path / "onnx", tmp_path / "pixels.npy", tmp_path / "out.npy", blocked=("siamcli", "tensorflow", "keras"),
    )
    assert np.max(np.abs(np.load(tmp_path / "out.npy") - _siamcli_embeddings(tiny_run, paths))) <= TOLERANCE


def test_an_export_that_does_not_match_model_keras_is_refused_and_not_written(tiny_run, tmp_path, monkeypatch):
    from siamcli.errors import UserError
    from siamcli.export import artifacts, check

    monkeypatch.setattr(check, "TOLERANCE", -1.0)  # every measured difference now fails the check
    with pytest.raises(UserError, match="does not reproduce model.keras"):
        artifacts.export_run(str(tiny_run), "onnx", out=str(tmp_path / "onnx"))
    assert not (tmp_path / "onnx").exists() and not list(tmp_path.iterdir())


def test_the_held_out_sample_is_chosen_without_the_reports_libraries(tiny_run):
    # export checks on the run's held-out images; choosing them must not import evaluate's pandas and
    # matplotlib (TensorFlow, which decodes them, is another matter)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        import siamcli.export.samples
        from siamcli.evaluation.selection import select_data
        from siamcli.rundir import find_run
        selection = select_data(find_run(sys.argv[1]), None)
        print(selection.held_out, len({item.label for item in selection.items}))
        print(sorted({"pandas", "matplotlib", "tensorflow"} & set(sys.modules)))
    """), str(tiny_run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    chosen, heavy = done.stdout.splitlines()[-2:]
    held_out, identities = chosen.split()
    assert held_out == "True" and int(identities) >= 1
    assert heavy == "[]"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--format", "savedmodel", "--quantize"), "--quantize applies to --format litert only"),
        (("--format", "tflite"), "savedmodel"),
        (("--samples", "1"), "--samples must be at least 2"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tiny_run, tmp_path, flags, message):
    done = run_cli("export", str(tiny_run), "--out", str(tmp_path / "x"), *flags)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_non_empty_out_folder_needs_force(tiny_run, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    done = run_cli("export", str(tiny_run), "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "--force" in done.stderr
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_onnx_without_its_converter_says_what_to_install(tiny_run, tmp_path):
    script = BLOCK.format(blocked={"tf2onnx"}) + "from siamcli.cli.app import main\nsys.argv[0] = 'siamcli'\nmain()\n"
    done = subprocess.run(
        [sys.executable, "-c", script, "export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2 and "needs tf2onnx" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
