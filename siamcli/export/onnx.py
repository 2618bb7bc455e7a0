"""`--format onnx`: model.onnx (pixels already resized → embedding, opset 17) by tf2onnx, checked with onnxruntime."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np

from siamcli.errors import UserError
from siamcli.export.check import TOLERANCE, max_diff
from siamcli.export.result import ExportResult, fixed_io
from siamcli.export.samples import Samples
from siamcli.models.light_writer import serving_function
from siamcli.quiet import quietly
from siamcli.tf_runtime import import_tensorflow

ONNX_FILE = "model.onnx"


def require_tools() -> None:
    """tf2onnx, onnx and onnxruntime import, or a one-line UserError saying which do not and why."""
    import_tensorflow()  # tf2onnx imports it: quietly first
    problems = []
    for name in ("tf2onnx", "onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # not installed, or installed against other versions
            problems.append(f"{name} ({' '.join(str(exc).split())[:120]})")
    if problems:
        raise UserError(f"--format onnx needs {', '.join(problems)}: pip install tf2onnx onnxruntime (or 'siamcli[export]')")


def write(model, size: int, tmp: Path, sample: Samples, expected: np.ndarray, quantize: bool) -> ExportResult:
    """model.onnx in `tmp`, run with onnxruntime and measured against `expected` (model.keras's embeddings)."""
    serve = serving_function(model, size)
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        quietly(lambda: tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17, output_path=str(tmp / ONNX_FILE)))
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp / ONNX_FILE), providers=["CPUExecutionProvider"])
        vectors = session.run(["embedding"], {"pixels": sample.pixels.astype(np.float32)})[0]
    except Exception as exc:  # the converter's or runtime's own words say what it cannot do
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"cannot convert this model to ONNX with tf2onnx {tf2onnx.__version__}: {type(exc).__name__}: {detail}") from exc
    inputs, outputs = fixed_io(size, int(expected.shape[1]))
    return ExportResult(
        format="onnx", out=tmp, files={}, inputs=inputs, outputs=outputs, samples=len(sample.pixels), sample_source=sample.source,
        max_abs_diff={ONNX_FILE: max_diff(vectors, expected)}, tolerance=TOLERANCE,
        notes=[f"opset 17, tf2onnx {tf2onnx.__version__}, checked with onnxruntime {onnxruntime.__version__}"],
    )
