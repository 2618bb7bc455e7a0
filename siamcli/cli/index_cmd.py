"""siamcli index GALLERY_DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from siamcli.choices import IndexType
from siamcli.cli.common import engine_errors, fmt, print_json, stdout
from siamcli.cli.progress import ProgressDisplay
from siamcli.errors import UserError
from siamcli.models.pretrained_run import SPEC_HELP  # importing it also lets --model imagenet resolve


def index(
    paths: Annotated[Optional[list[Path]], typer.Argument(metavar="GALLERY_DIR", show_default=False, help="Folder of images: sub-folder names become labels; images at its root get an empty label. With --merge: the PART_DIRs (partial indexes) to combine.")] = None,
    model: Annotated[Optional[str], typer.Option(help=f"Run directory or its model.keras, or {SPEC_HELP}: ResNet50's ImageNet features with no training (docs/index.md) (default: runs/latest).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Index directory (default: <model run>/index; with --shard I/N: <model run>/index.part-I-of-N).")] = None,
    index_type: Annotated[Optional[IndexType], typer.Option(show_default=False, help="auto, flat (exact), hnsw, ivf or ivfpq (approximate; ivfpq: PQ codes re-ranked from 8-bit vectors, ≈ 298 bytes a vector at 10^7 (docs/scaling.md), memory-mapped by queries, for galleries of millions). auto: flat up to 50,000 images, HNSW past that while it fits in 8 GiB, then ivfpq; approximate types are tuned to recall@10 ≥ 0.95 (default: auto; an update keeps the type it was built with).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (every shard of one gallery must use the same).")] = 32,
    append: Annotated[bool, typer.Option("--append", help="Add images not indexed yet (same path and content = already there); keep every existing entry and id.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Drop entries whose files are gone (refused where there is no index).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild an existing index from scratch.")] = False,
    moved: Annotated[bool, typer.Option("--moved", help="With --append: the indexed gallery now lives at GALLERY_DIR; rewrite the stored paths.")] = False,
    add_gallery: Annotated[bool, typer.Option("--add-gallery", help="With --append: GALLERY_DIR is a further folder; the index spans several.")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Embed only share I of N of the gallery into a partial index (run the N shards on N machines, then --merge).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Combine the partial indexes of all N shards (given as arguments) into one index, identical to a single-machine build.")] = False,
    compact: Annotated[bool, typer.Option("--compact", help="Rewrite the index (--out, or the --model run's) as one segment without its removed rows; embeds nothing, takes no GALLERY_DIR.")] = False,
    export_items: Annotated[bool, typer.Option("--export-items", help="Write <index>/items.csv (id, path, label) of the index as it is now; takes no GALLERY_DIR.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document on stdout.")] = False,
) -> None:
    """Embed a folder of images with a trained model and build a FAISS index over it (cosine similarity).

    Writes index.faiss, items.sqlite, items.csv (id, path, label), embeddings.npy and manifest.json to the index directory. An existing index is only changed with --append, --prune, --compact or --force; an update adds a segment (the new images) and a tombstone file (removed rows) and swaps manifest.json in one rename, so a failed or killed update leaves the previous index as it was. Search it with `siamcli query IMAGE`.

    A gallery too big for one machine: run `siamcli index GALLERY --shard I/N --out PART_I` on N machines (I = 1…N), then `siamcli index --merge PART_1 … PART_N`.
    """
    with engine_errors():
        paths = list(paths or [])
        if compact or export_items:
            result = _whole_index(paths, model, out, index_type, compact, export_items, merge=merge, shard=shard,
                                  updates=append or prune or force)
            if result is None:
                return
        elif merge:
            from siamcli.index.shard import MergeOptions, merge_parts

            _refuse_with_merge(shard=shard, append=append, prune=prune)
            options = MergeOptions(partials=tuple(str(p) for p in paths), model=model, out=str(out) if out else None,
                                   index_type=index_type.value if index_type else None, force=force)
            with ProgressDisplay() as display:
                result = merge_parts(options, events=display)
        else:
            from siamcli.index.build import IndexOptions, build_index

            if len(paths) != 1:
                raise UserError(
                    "give one gallery folder: siamcli index GALLERY_DIR" if not paths else
                    f"siamcli index takes one gallery folder, got {len(paths)}; to combine partial indexes pass --merge"
                )
            options = IndexOptions(
                gallery=str(paths[0]), model=model, out=str(out) if out else None, index_type=index_type.value if index_type else None,
                batch_size=batch_size, append=append, prune=prune, force=force, shard=shard, moved=moved, add_gallery=add_gallery,
            )
            with ProgressDisplay() as display:
                if shard is not None:
                    from siamcli.index.shard import build_part

                    result = build_part(options, display)
                else:
                    result = build_index(options, events=display)
    if json_output:
        print_json(result.summary())
    elif shard is not None and not merge:
        _print_part_summary(result)
    else:
        _print_summary(result)


def _whole_index(paths, model, out, index_type, compact: bool, export_items: bool, merge: bool, shard, updates: bool):
    """--compact / --export-items on an existing index: the result to print, or None when only exported."""
    from siamcli.index.build import default_index_dir
    from siamcli.index.compact import compact_index
    from siamcli.index.compact import export_items as export
    from siamcli.index.store import is_index_dir, load_index, missing_index_message
    from siamcli.rundir import find_run

    if paths or merge or shard is not None or updates:
        raise UserError("--compact and --export-items work on an existing index (--out DIR or --model RUN): "
                        "give no GALLERY_DIR and no --append/--prune/--force/--merge/--shard")
    run_dir = find_run(model).run_dir if model or not out else None
    directory = Path(out) if out else default_index_dir(run_dir)
    if not is_index_dir(directory):
        purpose = " to compact" if compact else " to export"
        raise UserError(missing_index_message(directory, model=run_dir or "RUN", purpose=purpose))
    load_index(directory, full=True)  # a damaged index is reported before any work
    result = None
    if compact:
        with ProgressDisplay() as display:
            result = compact_index(directory, index_type.value if index_type else None, events=display)
    if export_items:
        stdout.print(f"wrote {export(directory)}")
    return result


def _refuse_with_merge(shard: str | None, append: bool, prune: bool) -> None:
    if shard is not None:
        raise UserError("--merge combines partials that --shard wrote; run them as separate commands")
    if append or prune:
        raise UserError("--merge builds a new index from the partials; it cannot be combined with --append or --prune")


def _print_summary(result) -> None:
    summary = result.summary()
    title = f"Index {'written' if result.written else 'already up to date'}: {result.index_dir}"
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("gallery", summary["gallery"])
    table.add_row("model", summary["model"])
    table.add_row("images in the index", str(summary["count"]))
    if result.mode == "compact":
        table.add_row("rows", f"{result.kept} kept; {result.removed} removed rows dropped from disk")
    elif result.mode not in ("build", "merge"):
        table.add_row("rows", _changes(result))
    table.add_row("skipped files", str(len(result.skipped)))
    if result.written and result.mode not in ("build", "merge"):
        table.add_row("update", f"{result.update}; {_size(result.bytes_written)} written")
    table.add_row("segments / size", f"{result.segments} / {_size(result.index_bytes)}")
    kind = "exact" if result.index_type == "flat" else "approximate"
    table.add_row("index", f"{result.factory} ({kind}, inner product = cosine)")
    if result.index_type != "flat":
        params = ", ".join(f"{k}={v}" for k, v in result.search_params.items())
        table.add_row("recall@10 vs exact", f"{fmt(result.recall_at_10)} ({params})")
    table.add_row("match threshold", f"none: {result.threshold_note}" if result.threshold is None
                  else f"squared distance ≤ {result.threshold:.4f} (similarity ≥ {1 - result.threshold / 2:.4f})")
    if result.images_per_second is not None:  # None: too few images embedded for the figure to mean anything
        table.add_row("embedding speed", f"{result.images_per_second:.1f} images/s")
    table.add_row("time", f"{result.seconds:.1f} s")
    stdout.print(table)


def _changes(result) -> str:
    """previous → count and every row accounted for (result.py says how they add up)."""
    gone = f", {result.gone} gone (still indexed: --prune drops them)" if result.gone else ""
    return (f"{result.previous} → {result.count}: {result.added} added, {result.replaced} changed, {result.touched} touched "
            f"(same content), {result.removed} removed{gone}, {result.kept} kept")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def _print_part_summary(result) -> None:
    table = Table(title=f"Partial index written: {result.index_dir}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("gallery", result.gallery)
    table.add_row("model", str(result.model_path))
    table.add_row("shard", f"{result.shard} of {result.shards}: images {result.start}…{result.stop - 1} of {result.gallery_count}"
                  if result.stop > result.start else f"{result.shard} of {result.shards}: empty (more shards than batches)")
    table.add_row("vectors written", str(result.count))
    table.add_row("skipped files", str(len(result.skipped)))
    table.add_row("time", f"{result.seconds:.1f} s")
    stdout.print(table)
    stdout.print(f"When every shard is done: {result.merge_command} (PART_1 ... PART_{result.shards}: the {result.shards} partial folders)")
