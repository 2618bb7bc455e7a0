"""The similarity at which two images are joined: `--threshold`, else the run's calibrated one.

The calibrated threshold is read from `<run>/calibration.json` (siamcli/calibration.py) and used
only when it is reliable and was measured on the very model the vectors come from (same
sha256), as `siamcli query` does. With neither, nothing is clustered: a guessed threshold would
decide every cluster.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from siamcli.calibration import CALIBRATION_FILE, read_calibration
from siamcli.cluster.options import ClusterOptions, command_line
from siamcli.errors import UserError

GIVEN, CALIBRATED = "--threshold", "calibrated"


def cluster_threshold(options: ClusterOptions, run_dir: Path | None, fingerprint: str) -> tuple[float, str]:
    """(cosine similarity, where it came from: GIVEN or CALIBRATED), or UserError saying how to get one."""
    if options.threshold is not None:
        return float(options.threshold), GIVEN
    calibration, why = None, "the index's model is gone, and with it its run's calibration"
    if run_dir is not None:
        calibration, why = read_calibration(run_dir, fingerprint)
        if not (run_dir / CALIBRATION_FILE).is_file():
            why = f"{run_dir} holds no {CALIBRATION_FILE}"
    if calibration is not None and not calibration.reliable:
        why = f"the run's calibrated threshold is not reliable ({calibration.reason})"
    elif calibration is not None and not 0.0 < calibration.similarity < 1.0:
        why = f"the run's calibrated threshold (similarity {calibration.similarity:.4f}) is outside 0…1 and joins everything or nothing"
    elif calibration is not None:
        return float(calibration.similarity), CALIBRATED
    evaluate = f"`siamcli evaluate --model {shlex.quote(str(run_dir))}` on identities the model never trained on" if run_dir else "`siamcli evaluate`"
    raise UserError(f"no threshold to join images at: {why}; pass one, e.g. {command_line(options, threshold='0.5')} "
                    f"(a cosine similarity), or calibrate the model with {evaluate}, then run {command_line(options)} again")
