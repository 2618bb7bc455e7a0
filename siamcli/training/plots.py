"""loss.png: training loss and validation curves with the phase boundary marked."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from siamcli.atomic import save_figure  # noqa: E402


def plot_history(history: pd.DataFrame, target: Path) -> None:
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(history["epoch"], history["loss"], marker="o", label="triplet loss (train)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training loss")
    for column, label in (("map_at_r", "MAP@R (val)"), ("precision_at_1", "precision@1 (val)")):
        if column in history and history[column].notna().any():
            metric_axis.plot(history["epoch"], history[column], marker="o", label=label)
    metric_axis.set_ylim(0, 1.02)
    metric_axis.set_xlabel("epoch")
    metric_axis.set_title("Validation (held-out identities)")
    finetune = history[history["phase"] == "finetune"]
    if len(finetune) and len(finetune) < len(history):
        boundary = finetune["epoch"].iloc[0] - 0.5
        for axis in (loss_axis, metric_axis):
            axis.axvline(boundary, color="grey", linestyle="--", label="fine-tuning starts")
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    save_figure(target, figure)
    plt.close(figure)
