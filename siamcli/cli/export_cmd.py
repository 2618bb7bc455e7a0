"""siamcli export [RUN] --format savedmodel|litert|onnx"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from siamcli.choices import ExportFormat
from siamcli.cli.common import engine_errors, print_json, stderr, stdout, warn
from siamcli.cli.progress import ProgressDisplay


def export(
    run: Annotated[Optional[str], typer.Argument(metavar="RUN", show_default=False, help="Run directory or its model.keras (default: runs/latest).")] = None,
    format: Annotated[ExportFormat, typer.Option("--format", help="savedmodel (TF Serving, any TensorFlow), litert (TFLite), or onnx (ONNX Runtime; needs tf2onnx and onnxruntime).")] = ExportFormat.SAVEDMODEL,
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default: RUN/export/FORMAT). For TF Serving: MODELS/NAME/1.")] = None,
    quantize: Annotated[bool, typer.Option("--quantize", help="litert: also write a dynamic-range quantised model (int8 weights, about 4x smaller) and measure its retrieval cost on the held-out people.")] = False,
    samples: Annotated[int, typer.Option(help="Sample images the export is checked on against model.keras.")] = 32,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out folder.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary (files, sizes, measured differences) as one JSON document on stdout.")] = False,
) -> None:
    """Export a run's embedding network for runtimes without siamcli: SavedModel, LiteRT or ONNX.

    Every export is loaded back with its own runtime and checked before it is moved into place: the embeddings of sample images (the run's held-out images) must equal model.keras's within the printed tolerance. SavedModel signatures take encoded image bytes (serving_default) or uint8 pixels of any size (embed_pixels); LiteRT and ONNX take float32 pixels already resized to the model's image size. See docs/export.md.

    Without --out, an export also writes RUN/light/ when it is missing or stale: the light model that query and verify use instead of TensorFlow (docs/light-model.md).
    """
    with engine_errors():
        from siamcli.export.artifacts import export_run
        from siamcli.models.light_writer import ensure_light_model

        with ProgressDisplay() as display:
            result = export_run(run, format.value, out=str(out) if out else None, quantize=quantize, force=force, samples=samples, events=display)
            # RUN/light/, which query and verify embed with instead of TensorFlow; --out elsewhere leaves RUN as it is
            light = ensure_light_model(run, events=display) if out is None else None
    for note in result.notes:
        warn(note)
    if light is not None:
        (stderr if json_output else stdout).print(f"light model (query and verify without TensorFlow): {light}", soft_wrap=True)
    if json_output:
        print_json(result.summary())
        return
    table = Table(title=f"Exported ({result.format}): {result.out}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for name, size in result.files.items():
        table.add_row(name, _size(size))
    for name, spec in result.inputs.items():
        table.add_row(f"input {name}", spec if isinstance(spec, str) else "; ".join(f"{k}: {v}" for k, v in spec.items()))
    for name, spec in result.outputs.items():
        table.add_row(f"output {name}", spec)
    table.add_row("checked on", result.sample_source)
    for check, diff in result.max_abs_diff.items():
        table.add_row(f"max |Δ| vs model.keras: {check}", f"{diff:.2e} (tolerance {result.tolerance:g})")
    quantised = result.quantised
    if quantised:
        table.add_row(f"quantised: {quantised['file']}", f"{_size(quantised['bytes'])} (float: {_size(quantised['float_bytes'])}); max |Δ| {quantised['max_abs_diff']:.2e}")
        retrieval = quantised.get("retrieval")
        if retrieval:
            f, q = retrieval["float32"], retrieval["dynamic_range"]
            table.add_row(
                f"retrieval cost ({retrieval['images']} held-out images)",
                f"MAP@R {f['map_at_r']:.3f} → {q['map_at_r']:.3f} ({retrieval['map_at_r_change']:+.3f}); "
                f"P@1 {f['precision_at_1']:.3f} → {q['precision_at_1']:.3f}",
            )
        else:
            table.add_row("retrieval cost", f"not measured: {quantised['retrieval_not_measured']}")
    stdout.print(table)


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
