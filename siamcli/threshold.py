"""The match threshold a command applies: the run's calibration (calibration.py), when reliable.

`siamcli query`, `siamcli serve` and the notebook API mark neighbours match / no match with it,
and say why when there is none.
"""

from __future__ import annotations

from pathlib import Path

from siamcli.calibration import CALIBRATION_FILE, read_calibration


def run_threshold(run_dir: Path, model_sha256: str) -> tuple[float | None, list[str]]:
    """(the reliable match threshold of the model's run or None, notes saying why there is none)."""
    calibration, why = read_calibration(run_dir, model_sha256)
    if calibration is None:  # say why only when a calibration exists but cannot be used
        return None, [why] if (run_dir / CALIBRATION_FILE).exists() else []
    if not calibration.reliable:
        return None, [f"no match column: the run's threshold is not reliable ({calibration.reason})"]
    return calibration.threshold, []
