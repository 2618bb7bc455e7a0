"""A run's history: one row per epoch (history.csv, loss.png) and the line a log shows for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siamcli import rundir
from siamcli.atomic import write_csv
from siamcli.training.config import PHASES
from siamcli.training.plots import plot_history

HISTORY_COLUMNS = [
    "epoch", "phase", "loss", "precision_at_1", "map_at_r", "active_fraction",
    "positive_distance", "negative_distance", "distance_gap", "images_per_second", "seconds", "lr", "collapsed",
]


def epoch_row(epoch: int, phase: str, stats: dict, metrics: dict, lr: float, collapsed: bool) -> dict:
    """One history row: the epoch's step statistics (step.EpochTotals.row) and validation scores."""
    return {
        "epoch": epoch, "phase": phase, "loss": stats["loss"], **metrics,
        "active_fraction": stats["active_fraction"],
        "positive_distance": stats["positive_distance"], "negative_distance": stats["negative_distance"],
        "distance_gap": stats["negative_distance"] - stats["positive_distance"],
        "images_per_second": stats["images_per_second"], "seconds": stats["seconds"],
        "lr": lr, "collapsed": collapsed,
    }


def epoch_line(row: dict) -> str:
    """One history row as the line a log shows: loss, speed, validation scores, time."""
    scores = "no validation"
    if row["map_at_r"] == row["map_at_r"]:  # not NaN
        scores = f"val P@1 {row['precision_at_1']:.3f}  MAP@R {row['map_at_r']:.3f}"
    return (f"loss {row['loss']:.4f}  {row['images_per_second']:.0f} img/s  {scores}  {row['seconds']:.1f} s"
            + ("  (collapsed)" if row["collapsed"] else ""))


def is_collapsed(embeddings: np.ndarray | None, active_fraction: float, loss: float, margin: float) -> bool:
    """Has training collapsed the embedding?

    Two signs: the validation embeddings have (almost) no spread around their mean, i.e. every
    image maps to nearly one point; or the loss sits at the margin with every triplet active,
    which is what equal distances everywhere give.
    """
    if embeddings is not None and len(embeddings) > 1:
        spread = float(np.mean(np.sum((embeddings - embeddings.mean(axis=0)) ** 2, axis=1)))
        if spread < 1e-3:
            return True
    return active_fraction > 0.99 and abs(loss - margin) < 0.02 * margin


class History:
    """The rows so far (a resumed run starts with its checkpoint's), written after every epoch."""

    def __init__(self, run_dir: Path, rows: list[dict]):
        self.run_dir = run_dir
        self.rows = list(rows)

    @property
    def last_phase(self) -> str | None:
        return self.rows[-1]["phase"] if self.rows else None

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS)

    def write(self, start_metrics: dict) -> None:
        """history.csv and loss.png (the validation curves from epoch 0, the start model)."""
        if not self.rows:
            return
        frame = self.frame()
        write_csv(self.run_dir / rundir.HISTORY_FILE, frame)
        plot_history(frame, self.run_dir / rundir.LOSS_PLOT, start_metrics)

    def throughput(self) -> dict:
        """Images/s per phase, leaving out each phase's first epoch (caching, tracing) when there are more."""
        frame = self.frame()
        out = {}
        for phase in PHASES:
            rows = frame[frame["phase"] == phase]["images_per_second"]
            if len(rows):
                out[phase] = float(rows.iloc[1:].mean() if len(rows) > 1 else rows.iloc[0])
        return out
