"""siamcli query IMAGE..."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from siamcli.cli.common import engine_errors, print_json, stdout, warn
from siamcli.cli.progress import ProgressDisplay
from siamcli.index.plot import PLOT_MAX_QUERIES


def query(
    images: Annotated[List[str], typer.Argument(metavar="IMAGE", show_default=False, help="Query images, or folders of them.")],
    k: Annotated[int, typer.Option("--k", help="Neighbours per query (the whole gallery if it is smaller).")] = 5,
    index: Annotated[Optional[str], typer.Option(help="Index directory (default: the index of --model's run, else runs/latest/index).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Run directory or model.keras to embed the queries with; must be the index's model (default: the one in its manifest).")] = None,
    plot: Annotated[Optional[str], typer.Option(metavar="FILE.png|DIR/", help=(
        f"Draw each query beside its neighbours. FILE.png: one picture of the first {PLOT_MAX_QUERIES} queries (a warning says when more "
        "were left out); DIR/ (a trailing slash, or an existing folder): one PNG per query, drawn one at a time."))] = None,
    batch_size: Annotated[int, typer.Option(help="Query images per forward pass.")] = 32,
    json_output: Annotated[bool, typer.Option("--json", help='Print [{"query", "results": [{"rank", "id", "path", "label", "similarity"(, "match")}]}] on stdout.')] = False,
) -> None:
    """Find the gallery images most similar to each query image (cosine similarity of embeddings).

    Prints a table per query: rank, similarity, label, path, and match / no match when `siamcli evaluate` has calibrated a threshold. The queries are embedded with the model the index was built with; any other model is refused. A query image that cannot be read is skipped with a warning naming it.
    """
    with engine_errors():
        from siamcli.index.search import query_images

        outcome = query_images(images, index=index, model=model, k=k, batch_size=batch_size)
        for note in outcome.notes:
            warn(note)
        written = _write_plot(outcome, plot) if plot else ""
    if json_output:
        print_json(outcome.to_json())
        return
    for result in outcome.results:
        stdout.print(escape(result.query), style="bold", soft_wrap=True)  # a line of its own: never folded
        table = Table()
        table.add_column("rank", justify="right")
        table.add_column("similarity", justify="right")
        if outcome.threshold is not None:
            table.add_column("match")
        table.add_column("label")
        table.add_column("path", overflow="fold")
        for n in result.neighbours:
            row = [str(n.rank), f"{n.similarity:.4f}"]
            if outcome.threshold is not None:
                row.append("[green]match[/green]" if n.match else "[red]no match[/red]")
            row += [escape(n.label) or "–", escape(n.path) + (" [red](file gone)[/red]" if n.missing else "")]
            table.add_row(*row)
        stdout.print(table)
    if outcome.prune_hint():
        warn(outcome.prune_hint())
    if outcome.threshold is not None:
        stdout.print(f"[dim]match: similarity ≥ {outcome.similarity_threshold:.4f} (calibrated by siamcli evaluate)[/dim]")
    if plot:
        stdout.print(f"[dim]{escape(written)}[/dim]")


def _write_plot(outcome, target: str) -> str:
    """--plot FILE.png (the first PLOT_MAX_QUERIES queries, a warning when more) or --plot DIR/
    (one file per query); returns the line that says what was written."""
    from siamcli.index import plot as plots

    if plots.plots_a_folder(target):
        with ProgressDisplay() as events:
            files = plots.plot_each(outcome, target, events)
        return f"{len(files)} plot(s) written to {target}"
    note = plots.left_out_note(len(outcome.results))
    if note:
        warn(f"--plot {target} draws {note}")
    plots.plot_results(outcome, target)
    return f"plot written to {target}"
