"""What an export returns and records beside its files (export.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from siamcli import __version__, rundir
from siamcli.jsonio import json_default
from siamcli.tf_runtime import import_tensorflow

EXPORT_JSON = "export.json"


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


def fixed_io(size: int, d: int) -> tuple[dict, dict]:
    """Inputs and outputs of the fixed-size function LiteRT and ONNX convert."""
    return ({"pixels": f"float32 (batch, {size}, {size}, 3) RGB 0-255, resized to {size}x{size} (bilinear, antialiased)"},
            {"embedding": f"float32 (batch, {d}), unit length"})


def write_export_json(path: Path, result: ExportResult, paths: rundir.RunPaths, loaded) -> None:
    """export.json: the summary and the model it was made from (`loaded`: a run_model.LoadedRunModel)."""
    document = {
        **result.summary(),
        "out": None,  # the folder may move; files are named relative to it
        "image_size": loaded.image_size,
        "embedding_dim": loaded.dim,
        "model": str(paths.model),
        "model_sha256": loaded.sha256,
        "versions": {"siamcli": __version__, "tensorflow": import_tensorflow().__version__},
    }
    path.write_text(json.dumps(document, indent=2, default=json_default) + "\n", encoding="utf-8")
