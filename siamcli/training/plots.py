"""loss.png: training loss and validation curves, epoch 0 (the start model) included, with the
phase boundary marked and whole epochs on the x axis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from siamcli.atomic import save_figure  # noqa: E402

VALIDATION_CURVES = (("map_at_r", "MAP@R (val)"), ("precision_at_1", "precision@1 (val)"))


def history_figure(history: pd.DataFrame, start: dict | None = None):
    """The figure of `history` (history.csv's rows); `start`: the start model's validation
    scores, drawn at epoch 0 (there is no loss before the first step)."""
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    loss_axis.plot(history["epoch"], history["loss"], marker="o", label="triplet loss (train)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training loss")
    for column, label in VALIDATION_CURVES:
        epochs, values = list(history["epoch"]), list(history[column])
        if start and start.get(column) is not None:
            epochs, values = [0, *epochs], [start[column], *values]
        if any(value == value for value in values):  # not all NaN: something was validated
            metric_axis.plot(epochs, values, marker="o", label=label)
    metric_axis.set_ylim(0, 1.02)
    metric_axis.set_xlabel("epoch")
    metric_axis.set_title("Validation (held-out identities; epoch 0: the start model)")
    finetune = history[history["phase"] == "finetune"]
    if len(finetune) and len(finetune) < len(history):
        boundary = finetune["epoch"].iloc[0] - 0.5
        for axis in (loss_axis, metric_axis):
            axis.axvline(boundary, color="grey", linestyle="--", label="fine-tuning starts")
    for axis in (loss_axis, metric_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.25
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    return figure


def plot_history(history: pd.DataFrame, target: Path, start: dict | None = None) -> None:
    figure = history_figure(history, start)
    save_figure(target, figure)
    plt.close(figure)
