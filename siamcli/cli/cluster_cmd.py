"""siamcli cluster FOLDER"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from siamcli.cli.common import engine_errors, fmt, print_json, stdout, warn
from siamcli.cli.progress import ProgressDisplay
from siamcli.cluster.options import DEFAULT_K, DEFAULT_METHOD, DEFAULT_OUT, SHEET_CLUSTERS, ClusterMethod

LISTED = 10  # clusters listed in the summary (all of them are in clusters.csv and --json)


def cluster(
    folder: Annotated[Optional[Path], typer.Argument(metavar="FOLDER", show_default=False, help="Folder of images to group, searched recursively (not needed with --index).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Run directory or model.keras to embed the images with (default: runs/latest; with --index: the index's model).")] = None,
    index: Annotated[Optional[Path], typer.Option(help="Cluster this index's stored vectors instead of embedding a FOLDER (nothing is re-embedded).")] = None,
    threshold: Annotated[Optional[float], typer.Option(show_default=False, help="Join two images when their cosine similarity is ≥ this (0 to 1), instead of the run's calibrated threshold.")] = None,
    method: Annotated[ClusterMethod, typer.Option(help="chinese-whispers (label propagation), average (average linkage on the graph) or components (connected components: one wrong pair joins two groups).")] = DEFAULT_METHOD,
    k: Annotated[int, typer.Option("--k", help="Neighbours of each image in the graph.")] = DEFAULT_K,
    out: Annotated[Path, typer.Option(help="Folder for clusters.csv (path,cluster) and contact_sheet.png (created; must be outside FOLDER).")] = Path(DEFAULT_OUT),
    link_to: Annotated[Optional[Path], typer.Option(help="Make this folder hold one folder of symbolic links per cluster (the images are never moved; undo: delete it).")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --link-to: replace the links an earlier `siamcli cluster` made there.")] = False,
    score: Annotated[bool, typer.Option("--score", help="Compare the clusters with FOLDER's identity sub-folders: pairwise and BCubed precision / recall / F1, ARI, NMI.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of Chinese Whispers' visiting order (and of the IVF sample past 20,000 images).")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help='Print {"clusters": [{"id", "size", "representative", "cohesion", "paths"}], "threshold", "method", "cluster_count", ...} on stdout.')] = False,
) -> None:
    """Group the images of FOLDER (or of an index) into identities: every image in exactly one cluster.

    Each image is joined to those of its --k nearest neighbours (FAISS) that are at least as similar as the threshold — the run's calibrated one (`siamcli evaluate`) or --threshold — and the graph is clustered by --method. Writes clusters.csv and a contact sheet of the largest clusters to --out.
    """
    with engine_errors():
        from siamcli.cluster.clustering import cluster_images
        from siamcli.cluster.options import ClusterOptions

        options = ClusterOptions(
            folder=str(folder) if folder is not None else None, index=str(index) if index is not None else None, model=model,
            threshold=threshold, method=method.value, k=k, out=str(out), link_to=str(link_to) if link_to is not None else None,
            force=force, score=score, batch_size=batch_size, seed=seed,
        )
        with ProgressDisplay() as display:
            result = cluster_images(options, events=display)
    if json_output:
        print_json(result.to_json())
        return
    _print_summary(result)


def _print_summary(result) -> None:
    how = "calibrated by siamcli evaluate" if result.threshold_source == "calibrated" else "set by --threshold"
    stdout.print(f"{len(result.paths)} images → {len(result.clusters)} clusters ({result.singletons} of one image), "
                 f"largest {result.clusters[0].size}; {result.method}, similarity ≥ {result.threshold:.4f} ({how}), k = {result.k}",
                 soft_wrap=True)
    if result.graph["recall"] < 1.0:
        warn(f"the neighbour search ({result.graph['factory']}) found {result.graph['recall']:.1%} of the edges above the threshold")
    table = Table(title=f"The {min(LISTED, len(result.clusters))} largest clusters")
    for column in ("id", "images", "cohesion"):
        table.add_column(column, justify="right")
    table.add_column("representative", overflow="fold")
    for cluster in result.clusters[:LISTED]:
        table.add_row(str(cluster.id), str(cluster.size), fmt(cluster.cohesion), escape(result.paths[cluster.representative]))
    stdout.print(table)
    if result.score is not None:
        _print_score(result.score)
    stdout.print(f"wrote {result.csv} (path,cluster) and {result.sheet} (the {SHEET_CLUSTERS} largest clusters)", soft_wrap=True)
    if result.links is not None:
        stdout.print(f"linked {result.link_count} images into {len(result.clusters)} folders under {result.links}; "
                     f"they are only links: delete {result.links} to undo", soft_wrap=True)


def _print_score(score: dict) -> None:
    table = Table(title="Against the identity folders", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for name, key in (("pairwise precision / recall / F1", "pairwise"), ("BCubed precision / recall / F1", "bcubed")):
        table.add_row(name, " / ".join(fmt(score[f"{key}_{part}"]) for part in ("precision", "recall", "f1")))
    table.add_row("adjusted Rand index", fmt(score["adjusted_rand_index"]))
    table.add_row("normalised mutual information", fmt(score["normalized_mutual_info"]))
    table.add_row("clusters / identities", f"{score['clusters']} / {score['identities']}")
    stdout.print(table)
