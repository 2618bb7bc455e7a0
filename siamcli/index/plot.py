"""--plot: each query beside its neighbours, labelled with similarity (and match when known)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from siamcli.atomic import save_figure  # noqa: E402
from siamcli.data.decode import DecodeError, decode_image  # noqa: E402

CELL_INCHES = 1.9  # side of one thumbnail


def _thumbnail(axis, path: str) -> None:
    try:
        axis.imshow(decode_image(path))
    except DecodeError:
        axis.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])


def plot_results(outcome, target: str | Path) -> None:
    """One row per query: the query image, then its k neighbours (rank, label, similarity)."""
    rows = len(outcome.results)
    columns = 1 + max((len(r.neighbours) for r in outcome.results), default=0)
    figure, axes = plt.subplots(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * 1.25 * rows), squeeze=False)
    for row, result in enumerate(outcome.results):
        _thumbnail(axes[row][0], result.query)
        axes[row][0].set_title(f"query\n{Path(result.query).parent.name}/{Path(result.query).name}", fontsize=8, fontweight="bold")
        for spine in axes[row][0].spines.values():
            spine.set_edgecolor("#1f77b4")
            spine.set_linewidth(2.5)
        for column in range(1, columns):
            axis = axes[row][column]
            if column - 1 >= len(result.neighbours):
                axis.axis("off")
                continue
            neighbour = result.neighbours[column - 1]
            _thumbnail(axis, neighbour.path)
            verdict = "" if neighbour.match is None else (" ✓" if neighbour.match else " ✗")
            label = neighbour.label or Path(neighbour.path).name
            axis.set_title(f"#{neighbour.rank} {label}\nsim {neighbour.similarity:.3f}{verdict}", fontsize=8)
            if neighbour.match is not None:
                colour = "#2ca02c" if neighbour.match else "#d62728"
                for spine in axis.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
    figure.tight_layout()
    save_figure(target, figure)
    plt.close(figure)
