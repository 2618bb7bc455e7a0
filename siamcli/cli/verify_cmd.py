"""siamcli verify IMAGE_A IMAGE_B | --pairs PAIRS.csv"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from siamcli.cli.common import engine_errors, fail, fmt, print_json, stderr, stdout, warn


def verify(
    images: Annotated[Optional[List[str]], typer.Argument(metavar="IMAGE_A IMAGE_B", show_default=False, help="The two images to compare.")] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", metavar="PAIRS.csv", show_default=False, help="A CSV of pairs: columns a,b (paths; relative ones from the CSV's folder) and optionally same (1 or 0).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Run directory or its model.keras (default: runs/latest).", show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Match when the cosine similarity is ≥ this (-1 to 1), instead of the run's calibrated threshold.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    scores_json: Annotated[Optional[Path], typer.Option("--scores-json", metavar="FILE", show_default=False, help="With --pairs and a same column: write the scores (ROC AUC, EER, accuracy) to FILE as JSON.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help='Print {"a", "b", "similarity", "match", "threshold", ...} (a list of them with --pairs) on stdout.')] = False,
) -> None:
    """Say whether two images show the same identity: their cosine similarity, and match / no match.

    The decision uses the run's threshold calibrated by `siamcli evaluate` (with its false-match and false-non-match rates), or --threshold. With --pairs and a same column, also scores the pairs: ROC AUC, EER and the accuracy at the threshold.
    """
    images = images or []
    if pairs is None and len(images) != 2:
        fail(f"give two images (got {len(images)}), or --pairs PAIRS.csv; see `siamcli verify --help`")
    if pairs is not None and images:
        fail("give either two images or --pairs PAIRS.csv, not both")
    if scores_json is not None and pairs is None:
        fail("--scores-json needs --pairs PAIRS.csv with a same column")
    with engine_errors():
        from siamcli.pairs.verify import verify_files, verify_pairs

        if pairs is None:
            outcome = verify_files(images[0], images[1], model=model, threshold=threshold, batch_size=batch_size)
        else:
            outcome = verify_pairs(str(pairs), model=model, threshold=threshold, batch_size=batch_size, require_same=scores_json is not None)
        if scores_json is not None:
            from siamcli.atomic import write_json

            write_json(scores_json, outcome.scores.to_json())
    for note in outcome.notes:
        warn(note)
    if json_output:
        print_json(outcome.verdicts[0].to_json() if pairs is None else [v.to_json() for v in outcome.verdicts])
    elif pairs is None:
        _print_pair(outcome.verdicts[0])
    else:
        _print_pairs(outcome.verdicts)
    if pairs is None:
        return
    console = stderr if json_output else stdout  # --json owns stdout: the summary goes beside the warnings
    if outcome.decision.threshold is not None:
        console.print(_decision_line(outcome.decision), soft_wrap=True)
    if outcome.scores is not None:
        console.print(_scores_line(outcome.scores), soft_wrap=True)


def _print_pair(verdict) -> None:
    stdout.print(f"similarity {verdict.similarity:.6f}", soft_wrap=True)
    if verdict.match is None:
        stdout.print("match: – (no threshold: see the warning)", soft_wrap=True)
        return
    stdout.print(f"match: {'yes' if verdict.match else 'no'}", soft_wrap=True)
    stdout.print(_decision_line(verdict.decision), soft_wrap=True)


def _print_pairs(verdicts) -> None:
    table = Table()
    for name, justify in (("line", "right"), ("similarity", "right"), ("match", "left"), ("same", "left"), ("a", "left"), ("b", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for v in verdicts:
        match = "–" if v.match is None else ("[green]match[/green]" if v.match else "[red]no match[/red]")
        same = "–" if v.same is None else str(int(v.same))
        table.add_row(str(v.line), f"{v.similarity:.4f}", match, same, escape(v.a), escape(v.b))
    stdout.print(table)


def _decision_line(decision) -> str:
    if decision.calibration is None:
        return (f"threshold: similarity ≥ {decision.threshold:.6f}, set by --threshold; no error rates: they are measured "
                "only at the run's calibrated threshold (`siamcli evaluate`), not at one you set")
    c = decision.calibration
    return (f"threshold: similarity ≥ {decision.threshold:.6f}, calibrated by `siamcli evaluate` on {c.identities} identities the model "
            f"never trained on; there, false-match rate {_percent(c.far)} ({_interval(c.far_ci95)}), "
            f"false-non-match rate {_percent(c.frr)} ({_interval(c.frr_ci95)})")


def _scores_line(scores) -> str:
    line = (f"scores on {scores.pairs} pairs ({scores.same_pairs} same, {scores.different_pairs} different): "
            f"ROC AUC {fmt(scores.roc_auc, 4)}, EER {_percent(scores.eer)} at similarity {fmt(scores.eer_threshold, 4)}")
    if scores.accuracy is None:
        return line + "; no accuracy: no threshold"
    return (line + f"; at similarity ≥ {scores.threshold:.4f}: accuracy {_percent(scores.accuracy)}, false-match rate "
            f"{_percent(scores.false_match_rate)}, false-non-match rate {_percent(scores.false_non_match_rate)}")


def _interval(bounds) -> str:
    return f"95 % interval {100 * bounds[0]:.1f}–{100 * bounds[1]:.1f} %"


def _percent(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f} %"
