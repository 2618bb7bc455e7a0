"""`--format litert`: model.tflite (pixels already resized → embedding), checked through the LiteRT
interpreter; with `quantize`, model_dynamic_range.tflite too, its difference and retrieval cost measured."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from siamcli.export.check import TOLERANCE, max_diff
from siamcli.export.result import ExportResult, fixed_io
from siamcli.export.samples import Samples
from siamcli.models.light_writer import serving_function
from siamcli.quiet import quietly
from siamcli.tf_runtime import import_tensorflow

FLOAT_FILE = "model.tflite"
QUANTISED_FILE = "model_dynamic_range.tflite"


def write(model, size: int, tmp: Path, sample: Samples, expected: np.ndarray, quantize: bool) -> ExportResult:
    """The .tflite file(s) in `tmp`, run and measured against `expected` (model.keras's embeddings)."""
    tf = import_tensorflow()
    import keras

    # Converted from a SavedModel (in a scratch folder): that path keeps the signature, so the
    # .tflite file has named input `pixels` and output `embedding`.
    archive = keras.export.ExportArchive()
    # No archive.track(model): the variables the endpoints use are saved by themselves; tracking the
    # model too would store every weight twice (as Keras variables and as tf.Variables).
    archive.add_endpoint("serving_default", serving_function(model, size))
    scratch = tempfile.mkdtemp(prefix=".savedmodel.", dir=tmp.parent)
    try:
        quietly(lambda: archive.write_out(scratch, verbose=False))
        (tmp / FLOAT_FILE).write_bytes(_convert(tf, scratch, False))
        if quantize:
            (tmp / QUANTISED_FILE).write_bytes(_convert(tf, scratch, True))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _check(tmp, sample, expected, size, quantize)


def _convert(tf, saved_model: str, optimise: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: the plain interpreter runs it
    if optimise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
    return quietly(converter.convert)


def _check(tmp: Path, sample: Samples, expected: np.ndarray, size: int, quantize: bool) -> ExportResult:
    floats = _run(tmp / FLOAT_FILE, sample.pixels)
    inputs, outputs = fixed_io(size, int(expected.shape[1]))
    result = ExportResult(
        format="litert", out=tmp, files={}, inputs=inputs, outputs=outputs, samples=len(sample.pixels), sample_source=sample.source,
        max_abs_diff={FLOAT_FILE: max_diff(floats, expected)}, tolerance=TOLERANCE,
    )
    if quantize:
        quantised = _run(tmp / QUANTISED_FILE, sample.pixels)
        result.quantised = {
            "file": QUANTISED_FILE,
            "bytes": (tmp / QUANTISED_FILE).stat().st_size,
            "float_bytes": (tmp / FLOAT_FILE).stat().st_size,
            "max_abs_diff": max_diff(quantised, expected),
            "cosine_to_float_min": float(np.min(np.sum(quantised * floats, axis=1))),
        }
        result.quantised["retrieval"], why = _retrieval_cost(floats, quantised, sample)
        if why:
            result.quantised["retrieval_not_measured"] = why
    return result


def _run(path: Path, pixels: np.ndarray, batch: int = 16) -> np.ndarray:
    """Embeddings from a .tflite file through the LiteRT interpreter (ai-edge-litert, else TensorFlow's copy)."""
    def run() -> np.ndarray:
        runner = _interpreter(str(path)).get_signature_runner()
        chunks = [runner(pixels=pixels[i:i + batch].astype(np.float32))["embedding"] for i in range(0, len(pixels), batch)]
        return np.concatenate(chunks).astype(np.float32)

    return quietly(run)  # the interpreter announces its CPU delegate on stderr


def _interpreter(path: str):
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
