"""--plot: each query beside its neighbours, labelled with similarity (and match when known).

Bounded whatever the number of queries: one picture (`--plot FILE.png`) holds the first
PLOT_MAX_QUERIES queries, a row each, and says on itself how many were left out; a folder
(`--plot DIR/`) gets one picture per query, each drawn, written and closed before the next, so
memory is that of one row of thumbnails however many queries there are.
"""

from __future__ import annotations

import os
from pathlib import Path

from siamcli.atomic import save_figure
from siamcli.events import NO_EVENTS, Events

CELL_INCHES = 1.9  # side of one thumbnail
PLOT_MAX_QUERIES = 20  # rows of one picture: about 1,250 × 5,200 px at k = 5
STEM_BYTES = 150  # of the query's name in a per-query file name (file systems allow 255 bytes)


def plots_a_folder(target: str | Path) -> bool:
    """--plot DIR/ (a trailing slash, or a folder that exists) writes one picture per query."""
    return str(target).endswith(("/", os.sep)) or Path(target).is_dir()


def left_out_note(queries: int) -> str | None:
    """What one picture says when it shows only the first PLOT_MAX_QUERIES queries (None: all)."""
    if queries <= PLOT_MAX_QUERIES:
        return None
    return f"the first {PLOT_MAX_QUERIES} of {queries} queries; --plot DIR/ draws one picture per query"


def plot_results(outcome, target: str | Path) -> None:
    """One PNG: a row per query (the first PLOT_MAX_QUERIES): the query image, then its k
    neighbours (rank, label, similarity); a title says how many queries were left out."""
    results = outcome.results[:PLOT_MAX_QUERIES]
    figure, axes = _grid(len(results), _columns(outcome))
    for row, result in enumerate(results):
        _draw_row(axes[row], result)
    figure.tight_layout()
    note = left_out_note(len(outcome.results))
    if note:  # above the grid: the saved picture's tight box grows to hold it
        figure.text(0.5, 1, note.replace("; ", "\n"), ha="center", va="bottom", fontsize=10, color="#d62728")
    save_figure(target, figure)
    _pyplot().close(figure)


def plot_each(outcome, folder: str | Path, events: Events = NO_EVENTS) -> list[Path]:
    """One PNG per query in `folder`, named `<n>_<query name>.png` in query order (a file of
    that name is replaced). One figure of one row is redrawn for each query, its thumbnails
    replaced, so memory holds one row whatever the number of queries. Returns the files."""
    folder = Path(folder)
    digits = len(str(len(outcome.results)))
    written = []
    events.stage("plotting queries", total=len(outcome.results))
    figure, axes = _grid(1, _columns(outcome))
    try:
        for number, result in enumerate(outcome.results, start=1):
            _draw_row(axes[0], result)
            if number == 1:  # every row has the same grid and fonts: laid out once
                figure.tight_layout()
            stem = os.fsdecode(os.fsencode(Path(result.query).stem)[:STEM_BYTES])
            target = folder / f"{number:0{digits}d}_{stem}.png"
            save_figure(target, figure)
            written.append(target)
            events.advance(1)
    finally:
        _pyplot().close(figure)
    return written


def _columns(outcome) -> int:
    return 1 + max((len(r.neighbours) for r in outcome.results), default=0)


def _pyplot():
    """matplotlib, imported when a picture is drawn (the CLI reads this module's limits for --help)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(rows: int, columns: int):
    return _pyplot().subplots(rows, columns, figsize=(CELL_INCHES * columns, CELL_INCHES * 1.25 * rows), squeeze=False)


def _thumbnail(axis, path: str) -> None:
    """The image at `path` in `axis`, replacing what a previous row drew there."""
    from siamcli.data.decode import DecodeError, decode_image

    _clear(axis)
    axis.axis("on")
    try:
        pixels = decode_image(path)
    except DecodeError:
        axis.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=axis.transAxes)
    else:
        axis.imshow(pixels)
        axis.set_xlim(-0.5, pixels.shape[1] - 0.5)  # this image's extent, not the union with a removed one
        axis.set_ylim(pixels.shape[0] - 0.5, -0.5)
    axis.set_xticks([])
    axis.set_yticks([])


def _clear(axis) -> None:
    """Remove what a previous row drew in `axis` (plot_each redraws one figure)."""
    for artist in [*axis.images, *axis.texts]:
        artist.remove()
    axis.set_title("")


def _frame(axis, colour: str) -> None:
    for spine in axis.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)


def _draw_row(axes, result) -> None:
    """The query (framed blue), then each neighbour (framed green / red when a threshold is known)."""
    _thumbnail(axes[0], result.query)
    axes[0].set_title(f"query\n{Path(result.query).parent.name}/{Path(result.query).name}", fontsize=8, fontweight="bold")
    _frame(axes[0], "#1f77b4")
    for column, axis in enumerate(axes[1:]):
        if column >= len(result.neighbours):
            _clear(axis)
            axis.axis("off")
            continue
        neighbour = result.neighbours[column]
        _thumbnail(axis, neighbour.path)
        verdict = "" if neighbour.match is None else (" ✓" if neighbour.match else " ✗")
        label = neighbour.label or Path(neighbour.path).name
        axis.set_title(f"#{neighbour.rank} {label}\nsim {neighbour.similarity:.3f}{verdict}", fontsize=8)
        if neighbour.match is not None:
            _frame(axis, "#2ca02c" if neighbour.match else "#d62728")
