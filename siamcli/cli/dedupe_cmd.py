"""siamcli dedupe FOLDER | --undo RECORD"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from siamcli.cli.common import engine_errors, fail, print_json, stderr, stdout, warn
from siamcli.cli.progress import ProgressDisplay
from siamcli.dedupe.thresholds import EMBEDDING_MIN


def dedupe(
    folder: Annotated[Optional[Path], typer.Argument(metavar="FOLDER", show_default=False, help="The folder of images (its sub-folders too).")] = None,
    keep: Annotated[str, typer.Option(help="The file each group keeps: largest (most pixels, then most bytes), oldest (earliest modification time) or first (first by path); ties go to the first by path.")] = "largest",
    move_to: Annotated[Optional[Path], typer.Option("--move-to", metavar="DIR", show_default=False, help="Move the files the groups do not keep to DIR/<their path under FOLDER> (outside FOLDER, same disk; nothing is overwritten) and write a record there for --undo. Without it nothing moves: a dry run.")] = None,
    undo: Annotated[Optional[Path], typer.Option("--undo", metavar="RECORD", show_default=False, help="Put back the files a --move-to moved: give the record it wrote (DIR/dedupe-record-….json).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Compare the embeddings of this run (run directory or model.keras) instead of perceptual hashes.", show_default=False)] = None,
    against: Annotated[Optional[str], typer.Option("--against", metavar="INDEX", show_default=False, help="Also check the images against this index's gallery (read only), embedded with the index's model.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help=f"With --model or --against: near duplicates have a cosine similarity ≥ this (default {EMBEDDING_MIN}, measured: docs/dedupe.md).", show_default=False)] = None,
    crops: Annotated[Optional[bool], typer.Option("--crops/--no-crops", show_default=False, help="Perceptual method: also find crops, by aligning each image with its nearest by layout (on unless --no-crops; about a quarter more time).")] = None,
    workers: Annotated[int, typer.Option(help="Processes reading images (default: one per CPU).", show_default=False)] = os.cpu_count() or 1,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (--model, --against).")] = 32,
    imagededup_json: Annotated[Optional[Path], typer.Option("--imagededup-json", metavar="FILE", show_default=False, help="Also write imagededup's map to FILE: every image's path under FOLDER → the other files of its group.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help='Print {"groups": [{"paths", "keep", "kind": "exact"|"near"}], "counts", "threshold", "method", ...} on stdout.')] = False,
) -> None:
    """Find exact and near duplicate images in FOLDER and keep one file of each group.

    Exact duplicates have the same bytes (sha256). Near duplicates are the same photo resized, re-encoded, brightened, watermarked or cropped: found by perceptual hash and alignment (no model needed), or by a run's embeddings with --model. Other photos of the same person or scene are not duplicates. A dry run by default: it prints the groups and what it would move. Nothing is ever deleted.
    """
    if undo is not None:
        _undo(undo, folder, json_output, given=_given(move_to=move_to, model=model, against=against, threshold=threshold,
                                                     imagededup_json=imagededup_json))
        return
    if folder is None:
        fail("give the FOLDER of images to deduplicate, or --undo RECORD; see `siamcli dedupe --help`")
    with engine_errors():
        from siamcli.dedupe.find import check_options, find_duplicates
        from siamcli.dedupe.moves import check_move_to
        from siamcli.dedupe.result import DedupeOptions

        if move_to is not None:  # what can be checked before the search, is
            check_move_to(folder, move_to)
        if imagededup_json is not None:
            _check_output(imagededup_json, "--imagededup-json")
        options = DedupeOptions(keep=keep, model=model, against=against, threshold=threshold, crops=crops, workers=workers,
                                batch_size=batch_size)
        check_options(options)
        with ProgressDisplay() as events:
            result = find_duplicates(folder, options, events)
        _warn_about(result)
        if imagededup_json is not None:
            from siamcli.atomic import write_json

            write_json(imagededup_json, result.imagededup_map())
        moved = _move(result, folder, move_to) if move_to is not None else None
    _report(result, folder, moved, json_output, _hint(folder, keep, model, against, threshold, crops))


def _check_output(path: Path, option: str) -> None:
    """A file can be written at `path`: not a folder, below a folder (made if missing), not below a file."""
    if path.is_dir():
        fail(f"{option} {path} is a folder; give a file name")
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        fail(f"{option} {path} cannot be written: {parent} is a file, not a folder")


def _given(**options) -> list[str]:
    return [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]


def _undo(record: Path, folder: Optional[Path], json_output: bool, given: list[str]) -> None:
    if folder is not None or given:
        extra = [str(folder)] if folder is not None else []
        fail(f"--undo RECORD takes no FOLDER or other options (got {', '.join(extra + given)}); run `siamcli dedupe --undo {shlex.quote(str(record))}`")
    with engine_errors():
        from siamcli.dedupe.moves import undo

        with ProgressDisplay() as events:
            outcome = undo(record, events)
    for note in outcome.notes:
        warn(note)
    if json_output:
        print_json({"record": str(record), "restored": [{"from": m.target, "to": m.source} for m in outcome.restored],
                    "already_back": outcome.already_back, "notes": outcome.notes})
        return
    stdout.print(f"restored {len(outcome.restored)} file(s) from {escape(str(record))}"
                 + (f"; {outcome.already_back} were back already" if outcome.already_back else ""), soft_wrap=True)


def _warn_about(result) -> None:
    from siamcli.data.scan import describe_skipped

    if result.skipped:
        warn(describe_skipped(result.skipped))
    for note in result.notes:
        warn(note)


def _move(result, folder: Path, move_to: Path):
    """(the moves done, the record) — (None, None) when there is nothing to move."""
    from siamcli.dedupe.moves import move_files, plan_moves

    moves = plan_moves(result.movable(), folder, move_to)
    if not moves:
        return [], None
    with ProgressDisplay() as events:
        record = move_files(moves, folder, move_to, events)
    return moves, record


def _hint(folder: Path, keep: str, model, against, threshold, crops) -> str:
    """The same search with --move-to DIR, every option that shaped it repeated."""
    words = ["siamcli", "dedupe", str(folder), "--keep", keep]
    for option, value in (("--model", model), ("--against", against), ("--threshold", threshold)):
        if value is not None:
            words += [option, str(value)]
    if crops is not None:
        words.append("--crops" if crops else "--no-crops")
    return " ".join(shlex.quote(word) for word in words) + " --move-to DIR"


def _report(result, folder: Path, moved, json_output: bool, hint: str) -> None:
    counts = result.counts()
    if json_output:
        document = result.to_json()
        if moved is not None:
            moves, record = moved
            document.update(moved=[{"from": m.source, "to": m.target} for m in moves], record=None if record is None else str(record))
        print_json(document)
    else:
        _print_groups(result)
    console = stderr if json_output else stdout  # --json owns stdout: the summary goes to stderr
    summary = (f"{counts['groups']} group(s) ({counts['exact_groups']} exact, {counts['near_groups']} near) among {counts['images']} "
               f"images: {counts['to_move']} file(s) to move")
    if moved is None:
        tail = f"; dry run, nothing moved: to move them, run `{hint}`" if counts["to_move"] else "; nothing to move"
    elif moved[1] is None:
        tail = "; nothing to move, no record written"
    else:
        from siamcli.dedupe.moves import undo_command

        tail = f"; moved {len(moved[0])} to {Path(moved[1]).parent}, record {moved[1]}: undo with {undo_command(moved[1])}"
    console.print(escape(summary + tail), soft_wrap=True, highlight=False)


def _print_groups(result) -> None:
    for number, group in enumerate(result.groups, 1):
        stdout.print(f"group {number} · {group.kind} · {len(group.paths)} files", soft_wrap=True, highlight=False)
        stdout.print(f"  keep  {escape(group.keep)}", soft_wrap=True, highlight=False)
        for path in group.others:
            verb = "stays " if path in result.indexed else "move  "
            stdout.print(f"  {verb}{escape(path)}", soft_wrap=True, highlight=False)
