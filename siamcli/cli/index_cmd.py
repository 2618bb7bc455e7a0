"""siamcli index GALLERY_DIR"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from siamcli.cli.common import engine_errors, fmt, print_json, stderr, stdout, warn


def index(
    gallery_dir: Annotated[Path, typer.Argument(help="Folder of images: sub-folder names become labels; images at its root get an empty label.")],
    model: Annotated[Optional[str], typer.Option(help="Run directory or its model.keras (default: runs/latest).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Index directory (default: <model run>/index).")] = None,
    index_type: Annotated[Optional[str], typer.Option(help="auto, flat (exact), hnsw or ivf (approximate). auto: flat up to 50,000 images, HNSW past that while it fits in 8 GiB, then IVF with 8-bit codes; approximate types are tuned to recall@10 ≥ 0.95 (default: auto; an update keeps the type it was built with).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    append: Annotated[bool, typer.Option("--append", help="Add images not indexed yet (same path and content = already there); keep every existing entry and id.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Drop entries whose files are gone.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild an existing index from scratch.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document on stdout.")] = False,
) -> None:
    """Embed a folder of images with a trained model and build a FAISS index over it (cosine similarity).

    Writes index.faiss, items.csv (id, path, label), hashes.csv, embeddings.npy and manifest.json to the index directory, atomically: a failed or interrupted build leaves the previous index as it was. An existing index is only changed with --append, --prune or --force. Search it with `siamcli query IMAGE`.
    """
    with engine_errors():
        from siamcli.index.build import IndexOptions, build_index

        options = IndexOptions(
            gallery=str(gallery_dir), model=model, out=str(out) if out else None, index_type=index_type,
            batch_size=batch_size, append=append, prune=prune, force=force,
        )
        with _ProgressDisplay() as display:
            result = build_index(options, events=display)
    if json_output:
        print_json(result.summary())
    else:
        _print_summary(result)


class _ProgressDisplay:
    """Rich progress on stderr: a transient status line per stage, a bar while embedding (images/s, ETA)."""

    def __enter__(self):
        self.progress = Progress(
            TextColumn("embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=False,
        )
        self.status = None
        self.task = None
        self.started = 0.0
        self.done = 0
        return self

    def __exit__(self, *exc):
        self._stop_status()
        if self.task is not None:
            self.progress.stop()
        return False

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def message(self, text: str) -> None:
        # A warning is a plain stderr line: pause the live status around it.
        resume = str(self.status.status) if self.status is not None else None
        self._stop_status()
        warn(text)
        if resume is not None:
            self.stage(resume)

    def stage(self, text: str) -> None:
        # Transient: in a terminal it shows what is happening; it leaves nothing behind, and
        # nothing at all when stderr is not a terminal (so an error stays one line).
        if self.status is None:
            self.status = stderr.status(text, spinner="dots")
            self.status.start()
        else:
            self.status.update(text)

    def embedding_started(self, total: int) -> None:
        self._stop_status()
        if total == 0:
            return
        self.started, self.done = time.perf_counter(), 0
        self.progress.start()
        self.task = self.progress.add_task("embedding", total=total, speed="")

    def embedded(self, count: int) -> None:
        self.done += count
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, advance=count, speed=f"{rate:7.1f} img/s")

    def embedding_finished(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _print_summary(result) -> None:
    summary = result.summary()
    title = f"Index {'written' if result.written else 'already up to date'}: {result.index_dir}"
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("gallery", summary["gallery"])
    table.add_row("model", summary["model"])
    table.add_row("images in the index", str(summary["count"]))
    if result.mode != "build":
        table.add_row("added / replaced / removed / kept", f"{result.added} / {result.replaced} / {result.removed} / {result.kept}")
    table.add_row("skipped files", str(len(result.skipped)))
    kind = "exact" if result.index_type == "flat" else "approximate"
    table.add_row("index", f"{result.factory} ({kind}, inner product = cosine)")
    if result.index_type != "flat":
        params = ", ".join(f"{k}={v}" for k, v in result.search_params.items())
        table.add_row("recall@10 vs exact", f"{fmt(result.recall_at_10)} ({params})")
    table.add_row("match threshold", "not calibrated (run `siamcli evaluate`)" if result.threshold is None
                  else f"squared distance ≤ {result.threshold:.4f} (similarity ≥ {1 - result.threshold / 2:.4f})")
    if result.embedded_images:
        table.add_row("embedding speed", f"{result.images_per_second:.1f} images/s")
    table.add_row("time", f"{result.seconds:.1f} s")
    stdout.print(table)
