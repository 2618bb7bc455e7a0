"""What every export is held to: its embeddings equal model.keras's within TOLERANCE."""

from __future__ import annotations

import numpy as np

from siamcli.errors import UserError

TOLERANCE = 1e-4  # max |difference| of one embedding component, float32 exports vs model.keras
CHECK_ROWS = 32  # sample images a format that checks row by row (SavedModel) runs


def reference(model, pixels: np.ndarray) -> np.ndarray:
    """model.keras's embeddings of `pixels`: what each artifact must reproduce."""
    from siamcli.models.embed import embed

    return embed(model, pixels, batch_size=32).vectors


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over every component; inf when the shapes differ."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def require_within_tolerance(format: str, diffs: dict[str, float]) -> None:
    """A UserError (nothing is kept) when any check's difference is over TOLERANCE or NaN."""
    for check, diff in diffs.items():
        if not diff <= TOLERANCE:  # NaN fails too
            raise UserError(
                f"the {format} export does not reproduce model.keras: {check} differs by {diff:.3g} (> {TOLERANCE:g}); "
                "nothing was written; report this with the run's config.json"
            )
