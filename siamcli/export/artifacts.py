"""`siamcli export`: a run's embedding network as a SavedModel, a LiteRT model or an ONNX model.

What each format takes and returns (`export.json` beside the files records it too):

    savedmodel  signature `serving_default`: images, a batch of encoded JPEG/PNG/GIF/BMP bytes
                (tf.string) → embedding (batch, d), decoded and resized inside as siamcli does;
                signature `embed_pixels`: pixels, uint8 (batch, h, w, 3) RGB of any size → embedding
    litert      model.tflite: pixels, float32 (batch, S, S, 3) RGB 0–255, already resized to S×S
                → embedding; with `quantize`, model_dynamic_range.tflite too (int8 weights)
    onnx        model.onnx: the same input and output as LiteRT

LiteRT and ONNX take pixels already resized because the antialiased resize inside `model.keras`
is TensorFlow's ScaleAndTranslate op, which neither runtime has (tf2onnx: "not supported").

Every artifact is written under a temporary name, loaded back with its own runtime and checked:
the embeddings of sample images (the run's held-out images when its data folder is there,
else random pixels) must equal `model.keras`'s within `TOLERANCE` (max absolute difference per
component, of unit vectors). Only then is the folder moved into place. A quantised model is not
held to that tolerance: its difference and its retrieval cost (precision@1 and MAP@R on the
held-out identities, beside the float model's; it needs two identities at least, else the
summary says why it is not measured) are measured and reported instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamcli import __version__, rundir
from siamcli.atomic import atomic_directory
from siamcli.choices import ExportFormat
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.hashing import file_sha256
from siamcli.jsonio import json_default
from siamcli.tf_runtime import import_tensorflow

TOLERANCE = 1e-4  # max |difference| of one embedding component, float32 exports vs model.keras
QUANTISED_FILE = "model_dynamic_range.tflite"
EXPORT_JSON = "export.json"
MAX_RETRIEVAL_IMAGES = 500  # held-out images embedded to measure the quantised model's retrieval cost


@dataclass
class Samples:
    pixels: np.ndarray  # (n, S, S, 3) uint8, what every export is checked on
    labels: list[str] | None  # identities, when the run's held-out images were found
    source: str  # in words


@dataclass
class ExportResult:
    format: str
    out: Path
    files: dict[str, int]  # file name (relative to out) → bytes
    inputs: dict
    outputs: dict
    samples: int
    sample_source: str
    max_abs_diff: dict[str, float]  # check → measured max |difference| against model.keras
    tolerance: float
    quantised: dict | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "format": self.format, "out": str(self.out), "files": self.files, "inputs": self.inputs, "outputs": self.outputs,
            "samples": self.samples, "sample_source": self.sample_source, "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance, "quantised": self.quantised, "notes": self.notes,
        }


def export_run(
    run: str | None = None,
    format: str = ExportFormat.SAVEDMODEL.value,
    out: str | None = None,
    quantize: bool = False,
    force: bool = False,
    samples: int = 32,
    events: Events | None = None,
) -> ExportResult:
    """Export `run` (a run directory or its model.keras; None: runs/latest) to `out`
    (default `<run>/export/<format>`), verified against model.keras before it is moved into place."""
    events = events or NO_EVENTS
    format = str(format)
    ExportFormat.check(format, "--format")
    if quantize and format != ExportFormat.LITERT.value:
        raise UserError("--quantize applies to --format litert only (dynamic-range quantisation of the LiteRT model)")
    if samples < 2:
        raise UserError(f"--samples must be at least 2, got {samples}")
    paths = rundir.find_run(run)
    out_dir = Path(out) if out else paths.run_dir / "export" / format
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(f"{out_dir} is not empty; choose another --out or pass --force to replace it")
    if format == ExportFormat.ONNX.value:
        _require_onnx_tools()

    from siamcli.models.run_model import load_run_model

    import_tensorflow()
    events.stage("loading the model")
    loaded = load_run_model(paths)
    model, size = loaded.model, loaded.image_size
    events.stage("reading sample images")
    sample = _samples(paths, size, samples, retrieval=quantize)
    reference = _reference(model, sample.pixels)
    writer = {"savedmodel": _savedmodel, "litert": _litert, "onnx": _onnx}[format]
    with atomic_directory(out_dir) as tmp:
        events.stage(f"writing and checking the {format} export")
        result = writer(model, size, tmp, sample, reference, quantize)
        result.out = out_dir
        result.files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        for check, diff in result.max_abs_diff.items():
            if not diff <= TOLERANCE:  # NaN fails too
                raise UserError(
                    f"the {format} export does not reproduce model.keras: {check} differs by {diff:.3g} (> {TOLERANCE:g}); "
                    "nothing was written; report this with the run's config.json"
                )
        _write_export_json(tmp / EXPORT_JSON, result, paths, model, size)
    result.files[EXPORT_JSON] = (out_dir / EXPORT_JSON).stat().st_size
    return result


# ---- samples and the reference --------------------------------------------------------------
def _samples(paths: rundir.RunPaths, size: int, count: int, retrieval: bool) -> Samples:
    """The run's held-out images (all of them, up to MAX_RETRIEVAL_IMAGES, when measuring
    retrieval), or random pixels when its data folder is gone."""
    from siamcli.evaluation.report import select_data
    from siamcli.models.embed import load_pixels

    reason = "the run has no held-out images"
    try:
        items = select_data(paths, None).items
    except UserError as exc:  # no data folder, no split: check on random pixels instead
        items, reason = [], str(exc).split(";")[0]
    if items:
        wanted = MAX_RETRIEVAL_IMAGES if retrieval else count
        spread = np.unique(np.linspace(0, len(items) - 1, min(wanted, len(items))).round().astype(int))
        chosen = [items[i] for i in spread]  # spread over every identity, not the first few
        loaded = load_pixels([item.path for item in chosen], size)
        if len(loaded.kept) >= 2:
            labels = [chosen[i].label for i in loaded.kept]
            identities = len(set(labels))
            return Samples(loaded.images, labels, f"{len(labels)} held-out images of {identities} identit{'y' if identities == 1 else 'ies'}")
        reason = "the held-out images did not decode"
    rng = np.random.default_rng(0)
    return Samples(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), None, f"{count} random images ({reason})")


def _reference(model, pixels: np.ndarray) -> np.ndarray:
    from siamcli.models.embed import embed

    return embed(model, pixels, batch_size=32).vectors


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _check_rows(pixels: np.ndarray, limit: int = 32) -> np.ndarray:
    return pixels[:limit]


# ---- SavedModel -------------------------------------------------------------------------------
def _savedmodel(model, size: int, tmp: Path, sample: Samples, reference: np.ndarray, quantize: bool) -> ExportResult:
    tf = import_tensorflow()
    import keras

    archive = keras.export.ExportArchive()
    # No archive.track(model): the variables the endpoints use are saved by themselves; tracking the
    # model too would store every weight twice (as Keras variables and as tf.Variables).

    def embed_pixels(pixels):
        return {"embedding": model(tf.cast(pixels, tf.float32), training=False)}

    def embed_images(images):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True)

        pixels = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
        return {"embedding": model(pixels, training=False)}

    archive.add_endpoint("serving_default", embed_images, input_signature=[tf.TensorSpec((None,), tf.string, name="images")])
    archive.add_endpoint("embed_pixels", embed_pixels, input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="pixels")])
    _quietly(lambda: archive.write_out(str(tmp), verbose=False))

    # Checked as a server would call it: reloaded, through each signature.
    loaded = tf.saved_model.load(str(tmp))
    rows = _check_rows(sample.pixels)
    by_pixels = loaded.signatures["embed_pixels"](pixels=tf.constant(rows))["embedding"].numpy()
    encoded = tf.constant([_png(image) for image in rows])
    by_bytes = loaded.signatures["serving_default"](images=encoded)["embedding"].numpy()
    odd = np.random.default_rng(1).integers(0, 256, (2, size + 13, size + 5, 3), dtype=np.uint8)  # resized inside
    odd_diff = _max_diff(loaded.signatures["embed_pixels"](pixels=tf.constant(odd))["embedding"].numpy(), _reference(model, odd))
    d = int(reference.shape[1])
    return ExportResult(
        format="savedmodel", out=tmp, files={},
        inputs={"serving_default": {"images": f"tf.string (batch,): encoded JPEG/PNG/GIF/BMP bytes, RGB; resized to {size}x{size} inside"},
                "embed_pixels": {"pixels": "uint8 (batch, height, width, 3) RGB, any size (resized inside)"}},
        outputs={"embedding": f"float32 (batch, {d}), unit length"},
        samples=len(rows), sample_source=sample.source,
        max_abs_diff={"embed_pixels": _max_diff(by_pixels, reference[: len(rows)]),
                      "embed_pixels, other sizes": odd_diff,
                      "serving_default (PNG bytes)": _max_diff(by_bytes, reference[: len(rows)])},
        tolerance=TOLERANCE,
        notes=["JPEG bytes are decoded by TensorFlow, not Pillow as siamcli does: expect differences of the order of JPEG's "
               "own rounding, and no EXIF rotation"],
    )


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- the fixed-size function LiteRT and ONNX convert -------------------------------------------
def _serving_function(model, size: int):
    tf = import_tensorflow()
    head, backbone = model.get_layer("head"), model.get_layer("backbone")  # model.keras without its Resizing layer

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")])
    def serve(pixels):
        return {"embedding": head(backbone(pixels, training=False), training=False)}

    return serve


def _fixed_io(size: int, d: int) -> tuple[dict, dict]:
    return ({"pixels": f"float32 (batch, {size}, {size}, 3) RGB 0-255, resized to {size}x{size} (bilinear, antialiased)"},
            {"embedding": f"float32 (batch, {d}), unit length"})


# ---- LiteRT -----------------------------------------------------------------------------------
def _litert(model, size: int, tmp: Path, sample: Samples, reference: np.ndarray, quantize: bool) -> ExportResult:
    import tempfile

    tf = import_tensorflow()
    import keras

    # Converted from a SavedModel (in a scratch folder): that path keeps the signature, so the
    # .tflite file has named input `pixels` and output `embedding`.
    archive = keras.export.ExportArchive()
    # No archive.track(model): the variables the endpoints use are saved by themselves; tracking the
    # model too would store every weight twice (as Keras variables and as tf.Variables).
    archive.add_endpoint("serving_default", _serving_function(model, size))
    scratch = tempfile.mkdtemp(prefix=".savedmodel.", dir=tmp.parent)
    try:
        _quietly(lambda: archive.write_out(scratch, verbose=False))
        (tmp / "model.tflite").write_bytes(_convert_litert(tf, scratch, False))
        if quantize:
            (tmp / QUANTISED_FILE).write_bytes(_convert_litert(tf, scratch, True))
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return _check_litert(tmp, sample, reference, size, quantize)


def _convert_litert(tf, saved_model: str, optimise: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: the plain interpreter runs it
    if optimise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
    return _quietly(converter.convert)


def _check_litert(tmp: Path, sample: Samples, reference: np.ndarray, size: int, quantize: bool) -> ExportResult:
    floats = _run_litert(tmp / "model.tflite", sample.pixels)
    inputs, outputs = _fixed_io(size, int(reference.shape[1]))
    result = ExportResult(
        format="litert", out=tmp, files={}, inputs=inputs, outputs=outputs, samples=len(sample.pixels), sample_source=sample.source,
        max_abs_diff={"model.tflite": _max_diff(floats, reference)}, tolerance=TOLERANCE,
    )
    if quantize:
        quantised = _run_litert(tmp / QUANTISED_FILE, sample.pixels)
        result.quantised = {
            "file": QUANTISED_FILE,
            "bytes": (tmp / QUANTISED_FILE).stat().st_size,
            "float_bytes": (tmp / "model.tflite").stat().st_size,
            "max_abs_diff": _max_diff(quantised, reference),
            "cosine_to_float_min": float(np.min(np.sum(quantised * floats, axis=1))),
        }
        result.quantised["retrieval"], why = _retrieval_cost(floats, quantised, sample)
        if why:
            result.quantised["retrieval_not_measured"] = why
    return result


def _run_litert(path: Path, pixels: np.ndarray, batch: int = 16) -> np.ndarray:
    """Embeddings from a .tflite file through the LiteRT interpreter (ai-edge-litert, else TensorFlow's copy)."""
    def run() -> np.ndarray:
        runner = _litert_interpreter(str(path)).get_signature_runner()
        chunks = [runner(pixels=pixels[i:i + batch].astype(np.float32))["embedding"] for i in range(0, len(pixels), batch)]
        return np.concatenate(chunks).astype(np.float32)

    return _quietly(run)  # the interpreter announces its CPU delegate on stderr


def _litert_interpreter(path: str):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = import_tensorflow().lite.Interpreter
    return Interpreter(model_path=path)


def _retrieval_cost(floats: np.ndarray, quantised: np.ndarray, sample: Samples) -> tuple[dict | None, str]:
    """(precision@1 and MAP@R on the held-out identities, float model beside quantised, ""),
    or (None, why they cannot be measured)."""
    labels = sample.labels
    if labels is None:
        return None, f"no labelled held-out images (checked on {sample.source})"
    if len(set(labels)) < 2:  # every image's only neighbours are of its own identity: nothing to rank
        return None, "held-out images of 1 identity: retrieval cost needs at least 2 identities"
    from siamcli.evaluation.metrics import retrieval_metrics

    scores = {}
    for name, vectors in (("float32", floats), ("dynamic_range", quantised)):
        metrics = retrieval_metrics(vectors, labels, ks=(1,))
        scores[name] = {"precision_at_1": float(metrics.precision_at_1), "map_at_r": float(metrics.map_at_r)}
    scores["images"] = len(labels)
    scores["identities"] = len(set(labels))
    scores["map_at_r_change"] = scores["dynamic_range"]["map_at_r"] - scores["float32"]["map_at_r"]
    scores["precision_at_1_change"] = scores["dynamic_range"]["precision_at_1"] - scores["float32"]["precision_at_1"]
    return scores, ""


# ---- ONNX -------------------------------------------------------------------------------------
def _require_onnx_tools() -> None:
    """tf2onnx, onnx and onnxruntime import, or a one-line UserError saying which do not and why."""
    import importlib

    import_tensorflow()  # tf2onnx imports it: quietly first
    problems = []
    for name in ("tf2onnx", "onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # not installed, or installed against other versions
            problems.append(f"{name} ({' '.join(str(exc).split())[:120]})")
    if problems:
        raise UserError(f"--format onnx needs {', '.join(problems)}: pip install tf2onnx onnxruntime (or 'siamcli[export]')")


def _onnx(model, size: int, tmp: Path, sample: Samples, reference: np.ndarray, quantize: bool) -> ExportResult:
    serve = _serving_function(model, size)
    import_tensorflow()
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        _quietly(lambda: tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17, output_path=str(tmp / "model.onnx")))
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
        vectors = session.run(["embedding"], {"pixels": sample.pixels.astype(np.float32)})[0]
    except Exception as exc:  # the converter's or runtime's own words say what it cannot do
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"cannot convert this model to ONNX with tf2onnx {tf2onnx.__version__}: {type(exc).__name__}: {detail}") from exc
    inputs, outputs = _fixed_io(size, int(reference.shape[1]))
    return ExportResult(
        format="onnx", out=tmp, files={}, inputs=inputs, outputs=outputs, samples=len(sample.pixels), sample_source=sample.source,
        max_abs_diff={"model.onnx": _max_diff(vectors, reference)}, tolerance=TOLERANCE,
        notes=[f"opset 17, tf2onnx {tf2onnx.__version__}, checked with onnxruntime {onnxruntime.__version__}"],
    )


# ---- bookkeeping --------------------------------------------------------------------------------
def _write_export_json(path: Path, result: ExportResult, paths: rundir.RunPaths, model, size: int) -> None:
    tf = import_tensorflow()
    document = {
        **result.summary(),
        "out": None,  # the folder may move; files are named relative to it
        "image_size": size,
        "embedding_dim": int(model.output_shape[-1]),
        "model": str(paths.model),
        "model_sha256": file_sha256(paths.model),
        "versions": {"siamcli": __version__, "tensorflow": tf.__version__},
    }
    path.write_text(json.dumps(document, indent=2, default=json_default) + "\n", encoding="utf-8")


def _quietly(work):
    """Run `work()` with file descriptors 1 and 2 pointed at a temporary file (converters print
    MLIR and tf2onnx chatter from C++); what they printed is replayed if `work` fails."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            return work()
        except BaseException:
            os.dup2(saved[1], 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
