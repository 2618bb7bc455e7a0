"""Evaluation figures: confusion.png, roc.png, projection.png, errors.png (Agg, written atomically)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from siamcli.atomic import save_figure  # noqa: E402

HEATMAP_ALL_LIMIT = 150  # identities; past this the heatmap shows the worst HEATMAP_WORST by F1
HEATMAP_WORST = 60
MAX_TICK_LABELS = 60  # per axis; more identities → every n-th label
TSNE_LIMIT = 1000  # images; "auto" projection uses t-SNE up to this many, PCA past it
PROJECTION_POINTS = 20000  # a seeded sample past this many points keeps the scatter legible
LEGEND_LIMIT = 20


def confusion_heatmap(classification, target: Path, normalize: bool = False) -> None:
    _save(confusion_figure(classification, normalize), target)


def confusion_figure(classification, normalize: bool = False):
    """Seaborn heatmap, rows true, columns predicted; counts, or shares of each true row. Each
    tick label is an identity's label itself, numeric labels in numeric order."""
    import seaborn as sns

    title = "Confusion matrix (nearest-neighbour identity)"
    if len(classification.labels) > HEATMAP_ALL_LIMIT:
        labels = classification.display_order(classification.worst_first(HEATMAP_WORST)["label"].tolist())
        title += f": the {len(labels)} identities with the lowest F1 of {len(classification.labels)}"
    else:
        labels = classification.display_order()
    matrix = classification.confusion_matrix(labels)
    values = matrix.astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
        title += ", shares of each true identity"
    count = len(labels)
    side = min(40.0, max(5.0, 0.28 * count + 2.5))
    figure, axis = plt.subplots(figsize=(side + 1.2, side))
    step = max(1, math.ceil(count / MAX_TICK_LABELS))
    annotate = count <= 20
    sns.heatmap(
        values, ax=axis, cmap="Blues", square=True, cbar=True, linewidths=0.3 if count <= 60 else 0,
        annot=annotate, fmt=".2f" if normalize else ".0f", annot_kws={"size": 8},
        xticklabels=False, yticklabels=False, vmin=0, cbar_kws={"shrink": 0.6},
    )
    ticks = np.arange(0, count, step)
    axis.set_xticks(ticks + 0.5)
    axis.set_xticklabels([labels[i] for i in ticks], rotation=90, fontsize=8)
    axis.set_yticks(ticks + 0.5)
    axis.set_yticklabels([labels[i] for i in ticks], rotation=0, fontsize=8)
    thinned = f" (1 label in {step} shown)" if step > 1 else ""
    axis.set_xlabel("predicted identity" + thinned)
    axis.set_ylabel("true identity" + thinned)
    axis.set_title(title)
    return figure


def roc_plot(verification, target: Path) -> None:
    curve = verification.curve
    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    fpr, tpr = _thin(curve.fpr, curve.tpr, 4000)
    axis.plot(fpr, tpr, lw=2, label=f"ROC (AUC {verification.roc_auc:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axis.plot([0, 1], [1, 0], color="lightgrey", linestyle="--", lw=1)
    if verification.eer == verification.eer:
        axis.scatter([verification.eer], [1 - verification.eer], color="crimson", zorder=3,
                     label=f"EER {verification.eer:.3f} at distance ≤ {verification.threshold:.3f}")
    pairs = f"{verification.same_pairs:,} same / {verification.different_pairs:,} different-identity pairs"
    axis.set_title("Verification ROC" + (" (sampled pairs)" if verification.sampled else "") + f"\n{pairs}", fontsize=10)
    axis.set_xlabel("false match rate (different identities matched)")
    axis.set_ylabel("true match rate (same identity matched)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    _save(figure, target)


def projection_plot(embeddings: np.ndarray, labels: Sequence[str], target: Path, method: str = "auto", seed: int = 0) -> str:
    """2-D projection coloured by identity; returns the method used ("t-SNE" or "PCA")."""
    import seaborn as sns

    vectors = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels).astype(str)
    if len(vectors) > PROJECTION_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(vectors), PROJECTION_POINTS, replace=False))
        vectors, labels = vectors[keep], labels[keep]
    points, used = project(vectors, method, seed)
    names = np.unique(labels)
    palette = sns.color_palette("husl", len(names))
    colour_of = {name: palette[i] for i, name in enumerate(names)}
    markers = "os^DvPX"  # with many identities, colour and shape together tell neighbours apart
    figure, axis = plt.subplots(figsize=(8, 7))
    for position, name in enumerate(names):
        mask = labels == name
        axis.scatter(points[mask, 0], points[mask, 1], s=20 if len(points) < 2000 else 4, color=colour_of[name],
                     marker=markers[position % len(markers)] if len(names) > 10 else "o",
                     alpha=0.85, label=name, edgecolors="none")
    if len(names) <= LEGEND_LIMIT:
        axis.legend(fontsize=7, markerscale=1.5, loc="best", title="identity", title_fontsize=8)
    axis.set_title(f"Embeddings, {used} to 2-D, coloured by identity ({len(names)} identities, {len(points)} images)", fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    _save(figure, target)
    return used


def project(vectors: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates. auto: t-SNE up to TSNE_LIMIT points (PCA-initialised, seeded), else PCA."""
    n = len(vectors)
    if method not in ("auto", "pca", "tsne"):
        raise ValueError(f"projection must be auto, pca or tsne, got {method!r}")
    use_tsne = method == "tsne" or (method == "auto" and n <= TSNE_LIMIT)
    if n < 5:  # too few points for t-SNE's neighbourhoods
        use_tsne = False
    if use_tsne:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
        # One thread: t-SNE's OpenMP workers slow down many-fold when anything else wants the cores.
        with threadpool_limits(1):
            points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
        return points, "t-SNE"
    centred = vectors - vectors.mean(axis=0)
    if n < 2 or not np.any(centred):
        return np.zeros((n, 2)), "PCA"
    from sklearn.decomposition import PCA

    components = min(2, n, vectors.shape[1])
    points = PCA(n_components=components, random_state=seed).fit_transform(centred)
    if components < 2:
        points = np.column_stack([points, np.zeros(n)])
    return points, "PCA"


@dataclass(frozen=True)
class ErrorCase:
    query_path: str
    query_label: str
    neighbour_path: str  # the wrong nearest neighbour
    neighbour_label: str
    distance: float
    correct_path: str | None  # nearest image of the query's own identity
    correct_distance: float | None
    correct_rank: int | None = None  # its rank among all other images (1 = nearest)


def errors_plot(cases: Sequence[ErrorCase], target: Path) -> None:
    """One row per failed query: the query, the wrong nearest neighbour, the nearest right one."""
    from siamcli.data.decode import DecodeError, decode_image

    def show(axis, path, title, colour):
        axis.set_xticks([])
        axis.set_yticks([])
        if path is None:
            axis.text(0.5, 0.5, "not among\nthe nearest", ha="center", va="center", fontsize=8, transform=axis.transAxes)
        else:
            try:
                axis.imshow(decode_image(path))
            except (DecodeError, OSError):
                axis.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, transform=axis.transAxes)
        axis.set_title(title, fontsize=8, color=colour)

    if not cases:
        figure, axis = plt.subplots(figsize=(5, 1.5))
        axis.axis("off")
        axis.text(0.5, 0.5, "No errors: every query's nearest image has its identity.", ha="center", va="center")
        _save(figure, target)
        return
    figure, axes = plt.subplots(len(cases), 3, figsize=(7.5, 2.5 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        show(row[0], case.query_path, f"query: {_short(case.query_label)}\n{_short(Path(case.query_path).name)}", "black")
        show(row[1], case.neighbour_path, f"nearest: {_short(case.neighbour_label)} ✗\ndistance {case.distance:.3f}", "crimson")
        right = "" if case.correct_distance is None else f"\ndistance {case.correct_distance:.3f}"
        rank = "" if case.correct_rank is None else f", rank {case.correct_rank}"
        show(row[2], case.correct_path, f"nearest {_short(case.query_label)} ✓{rank}{right}", "seagreen")
    figure.suptitle("Worst queries: the wrong nearest neighbour found,\nand the nearest image of the right identity", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.5 * len(cases))))
    _save(figure, target)


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _thin(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= limit:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, limit).astype(int))
    return x[keep], y[keep]


def _save(figure, target: Path) -> None:
    try:
        save_figure(target, figure)
    finally:
        plt.close(figure)
