"""siamcli evaluate [DATA_DIR]"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from siamcli.choices import Projection
from siamcli.cli.common import engine_errors, fail, fmt, print_json, stdout
from siamcli.cli.progress import ProgressDisplay

CONFUSION_TABLE_LIMIT = 20  # identities; more and the confusion matrix is only in the files (A–T key them)
FIRST_COLUMN = 19  # the confusion table's row names, with its separator


def evaluate(
    data_dir: Annotated[Optional[Path], typer.Argument(metavar="DATA_DIR", help="Labelled folder to evaluate (default: the run's held-out identities, from split.json).", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Run directory or its model.keras (default: runs/latest).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the report files (default: <run>/eval for the held-out identities, <run>/eval-<folder> for a DATA_DIR).", show_default=False)] = None,
    k: Annotated[Optional[list[str]], typer.Option("--k", metavar="K[,K...]", help="k of recall@k: a comma list and/or repeated (default: 1,5,10).", show_default=False)] = None,
    show: Annotated[int, typer.Option(help="Rows of the per-class table, worst first (all rows are in per_class.csv).")] = 10,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also score the start model, raw pixels and the untrained backbone, side by side, and end with the verdict: did training help?")] = True,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    max_pairs: Annotated[int, typer.Option(help="Verification uses every pair up to this many, else a seeded sample of this many.")] = 5_000_000,
    projection: Annotated[Projection, typer.Option(help="projection.png method: auto (t-SNE up to 1000 images, else PCA), pca or tsne.")] = Projection.AUTO,
    normalize_confusion: Annotated[bool, typer.Option("--normalize", help="confusion.png shows each true identity's row as shares instead of counts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the verification pair sample and the projection.")] = 0,
    target_far: Annotated[Optional[float], typer.Option(help="Match threshold at this false-match rate, e.g. 0.001 (default: the equal error rate).", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the metrics (metrics.json) as one JSON document on stdout.")] = False,
) -> None:
    """Score a trained embedding: retrieval, per identity, confusion, verification.

    Leave-one-out over DATA_DIR (default: the run's held-out identities).
    Retrieval: precision@1, recall@k, R-precision, MAP@R, beside the start model, raw pixels
    and the untrained backbone; a closing verdict says whether training beat the best of them.
    Per identity: precision, recall and F1 of the nearest image's identity.
    Verification: ROC AUC, EER and the distance threshold at the EER.
    Files in --out: metrics.json, report.json, per_class.csv, confusion.csv,
    embeddings.npy, labels.csv, and the figures confusion.png, roc.png,
    projection.png and errors.png.
    """
    ks = parse_ks(k)
    if show < 0:
        fail(f"--show must be 0 or more, got {show}")
    with engine_errors():
        from siamcli.evaluation.report import EvaluateOptions
        from siamcli.evaluation.report import evaluate as run_evaluation

        options = EvaluateOptions(
            ks=ks, batch_size=batch_size, baselines=baselines, max_pairs=max_pairs, seed=seed,
            projection=projection.value, normalize_confusion=normalize_confusion, target_far=target_far,
        )
        with ProgressDisplay() as display:
            report = run_evaluation(model, str(data_dir) if data_dir is not None else None, str(out) if out else None, options, display)
    if json_output:
        print_json(report.metrics_json())
    else:
        _print_report(report, show)


def parse_ks(values: list[str] | None) -> tuple[int, ...]:
    """--k 1,5,10 and/or --k 1 --k 5 → (1, 5, 10); anything else is a usage error (exit 2)."""
    if not values:
        return (1, 5, 10)
    ks: set[int] = set()
    for value in values:
        for part in str(value).split(","):
            text = part.strip()
            if not text:
                continue
            try:
                number = int(text)
            except ValueError:
                fail(f"--k takes whole numbers of 1 or more, such as --k 1,5,10; got {text!r}")
            if number < 1:
                fail(f"--k values must be 1 or more, got {number}")
            ks.add(number)
    if not ks:
        fail("--k needs at least one value, such as --k 1,5,10")
    return tuple(sorted(ks))


def _print_report(report, show: int) -> None:
    stdout.print(escape(f"Evaluated {report.data.source} with {report.model}"))
    stdout.print(_retrieval_table(report))
    classification = report.classification
    if show > 0:
        worst = classification.worst_first(show)
        table = Table(title=f"Per identity, worst first ({len(worst)} of {len(classification.labels)}; all in per_class.csv)")
        for column in ("identity", "precision", "recall", "F1", "support"):
            table.add_column(column, justify="left" if column == "identity" else "right")
        for row in worst.itertuples(index=False):
            table.add_row(escape(str(row.label)), fmt(row.precision), fmt(row.recall), fmt(row.f1), str(row.support))
        stdout.print(table)
    if len(classification.labels) <= CONFUSION_TABLE_LIMIT:
        stdout.print(_confusion_table(classification))
    stdout.print(_summary_table(report))
    if report.calibration is not None:
        _plain(f"calibration: {_trust(report.calibration)}")
    _plain(f"Report written to {report.out_dir}: {', '.join(report.files)}")
    if report.verdict is not None:
        _plain(f"verdict: {report.verdict.text}")  # last: what the tables add up to


def _plain(text: str) -> None:
    """One line, never folded to the terminal's width (a pipe or a test reads it whole)."""
    stdout.print(escape(text), soft_wrap=True)


def _retrieval_table(report) -> Table:
    from siamcli.evaluation.baselines import BASELINE_ORDER, NAMES

    metrics = report.metrics
    table = Table(
        title=f"Retrieval, leave-one-out: {len(report.labels)} images, {len(set(report.labels))} identities, {metrics.queries} queries",
    )
    table.add_column("metric", style="bold")
    table.add_column("trained model", justify="right")
    columns = [name for name in BASELINE_ORDER if name in report.baselines]
    for name in columns:
        table.add_column(NAMES[name], justify="right")
    rows = [("precision@1", lambda m: m.precision_at_1)]
    rows += [(f"recall@{k}", lambda m, k=k: m.recall_at_k.get(k)) for k in report.ks]
    rows += [("R-precision", lambda m: m.r_precision), ("MAP@R", lambda m: m.map_at_r)]
    for title, get in rows:
        table.add_row(title, fmt(get(metrics)), *(fmt(get(report.baselines[name])) for name in columns))
    return table


def _summary_table(report) -> Table:
    classification, verification = report.classification, report.verification
    summary = Table(title="Classification and verification", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    summary.add_row("accuracy (nearest-neighbour identity)", fmt(classification.accuracy))
    summary.add_row("macro F1", fmt(classification.macro_f1))
    summary.add_row("ROC AUC (same vs different identity)", fmt(verification.roc_auc))
    summary.add_row("EER", fmt(verification.eer))
    summary.add_row("threshold at the EER (match when distance ≤)", fmt(verification.threshold, 4))
    pairs = f"{verification.same_pairs:,} same + {verification.different_pairs:,} different"
    summary.add_row("pairs" + (" (seeded sample)" if verification.sampled else " (all)"), pairs)
    if report.calibration is not None:
        _calibration_rows(summary, report.calibration)
    return summary


def _calibration_rows(table: Table, calibration) -> None:
    """The operating threshold query will use and its error rates with 95 % intervals."""
    point = "EER" if calibration.operating_point == "eer" else f"FAR ≤ {calibration.target_far:g}"
    table.add_row(f"match threshold ({point})", f"distance ≤ {calibration.threshold:.4f} (similarity ≥ {calibration.similarity:.4f})")
    table.add_row("false-match rate [95 % CI]", f"{calibration.far:.4f} [{calibration.far_ci95[0]:.4f}, {calibration.far_ci95[1]:.4f}]")
    table.add_row("false-non-match rate [95 % CI]", f"{calibration.frr:.4f} [{calibration.frr_ci95[0]:.4f}, {calibration.frr_ci95[1]:.4f}]")


def _trust(calibration) -> str:
    """Whether to rely on the threshold, and what its error rates mean for a comparison."""
    if calibration.reliable:
        return f"reliable: {calibration.in_words()}"
    return f"not reliable ({calibration.reason}); on these pairs, {calibration.in_words()}"


def _confusion_table(classification) -> Table:
    """Compact, so 20 identities fit 80 columns: short labels head the columns themselves (in
    numeric order when they are numbers); longer ones are keyed by letters (A, B, …), never by
    numbers, which numeric labels would make ambiguous."""
    from rich import box

    labels = classification.display_order()
    width = max(2, max(map(len, labels)))
    keys = labels if FIRST_COLUMN + len(labels) * (width + 1) <= 80 else [chr(ord("A") + i) for i in range(len(labels))]
    rows = labels if keys is labels else [f"{key} {label}" for key, label in zip(keys, labels)]
    matrix = classification.confusion_matrix(labels)
    table = Table(title="Confusion matrix", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
    table.add_column("true \\ nearest", style="bold", max_width=FIRST_COLUMN - 1, no_wrap=True, overflow="ellipsis")
    for key in keys:
        table.add_column(escape(key), justify="right", min_width=2, no_wrap=True)
    for i, row in enumerate(rows):
        cells = []
        for j, value in enumerate(matrix[i]):
            if value == 0:
                cells.append("[dim]·[/dim]")
            else:
                cells.append(f"[green]{value}[/green]" if i == j else f"[red]{value}[/red]")
        table.add_row(escape(row), *cells)
    return table
