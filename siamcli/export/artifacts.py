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

One module per format (savedmodel.py, litert.py, onnx.py), each `write(model, size, tmp, sample,
expected, quantize) -> ExportResult`; what they share: the sample (samples.py), the check
(check.py), the result and export.json (result.py).
"""

from __future__ import annotations

from pathlib import Path

from siamcli import rundir
from siamcli.atomic import atomic_directory
from siamcli.choices import ExportFormat
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.export import litert, onnx, savedmodel
from siamcli.export.check import TOLERANCE, reference, require_within_tolerance
from siamcli.export.litert import QUANTISED_FILE
from siamcli.export.result import EXPORT_JSON, ExportResult, write_export_json
from siamcli.export.samples import MAX_RETRIEVAL_IMAGES, Samples, held_out_samples
from siamcli.tf_runtime import import_tensorflow

__all__ = ["EXPORT_JSON", "MAX_RETRIEVAL_IMAGES", "QUANTISED_FILE", "TOLERANCE", "ExportResult", "Samples", "export_run"]

WRITERS = {ExportFormat.SAVEDMODEL.value: savedmodel.write, ExportFormat.LITERT.value: litert.write, ExportFormat.ONNX.value: onnx.write}


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
    paths, out_dir = _checked_request(run, format, out, quantize, force, samples)
    from siamcli.models.run_model import load_run_model

    import_tensorflow()
    events.stage("loading the model")
    loaded = load_run_model(paths)
    events.stage("reading sample images")
    sample = held_out_samples(paths, loaded.image_size, samples, retrieval=quantize)
    expected = reference(loaded.model, sample.pixels)
    with atomic_directory(out_dir) as tmp:
        events.stage(f"writing and checking the {format} export")
        result = WRITERS[format](loaded.model, loaded.image_size, tmp, sample, expected, quantize)
        result.out = out_dir
        result.files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        require_within_tolerance(format, result.max_abs_diff)
        write_export_json(tmp / EXPORT_JSON, result, paths, loaded)
    result.files[EXPORT_JSON] = (out_dir / EXPORT_JSON).stat().st_size
    return result


def _checked_request(run: str | None, format: str, out: str | None, quantize: bool, force: bool,
                     samples: int) -> tuple[rundir.RunPaths, Path]:
    """(the run, the folder to write) once the options are valid together, else a UserError."""
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
        onnx.require_tools()
    return paths, out_dir
