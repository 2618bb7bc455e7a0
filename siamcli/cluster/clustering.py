"""`siamcli cluster`: images (or an index's vectors) in, clusters out, and the files that show them.

    1. what is clustered (source.py) and the threshold (threshold.py): checked before any work,
       as are --out and --link-to (never inside the folder that is clustered: the contact sheet or
       the links would be clustered next time)
    2. the vectors: embedded by the run's model, or read from the index
    3. the k-NN graph (graph.py) and the clustering (methods.py); the clusters numbered largest
       first with their representative and cohesion (summary.py)
    4. --score against the identity sub-folders (score.py); <out>/clusters.csv (path, cluster)
       and <out>/contact_sheet.png (sheet.py); --link-to (links.py)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamcli.atomic import write_csv
from siamcli.cluster.graph import knn_graph
from siamcli.cluster.links import check_link_folder, write_links
from siamcli.cluster.methods import cluster_labels
from siamcli.cluster.options import ClusterOptions, validate_options
from siamcli.cluster.score import score_clusters
from siamcli.cluster.sheet import SHEET_FILE, write_contact_sheet
from siamcli.cluster.source import Images, load_vectors, open_folder, open_index
from siamcli.cluster.summary import Cluster, clusters_from_labels, labels_of
from siamcli.cluster.threshold import cluster_threshold
from siamcli.data.scan import Skipped
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events

CSV_FILE = "clusters.csv"


@dataclass
class ClusterResult:
    source: str  # the folder, or the index directory
    model_path: Path | None
    method: str
    threshold: float  # cosine similarity
    threshold_source: str  # "calibrated" or "--threshold"
    k: int
    graph: dict  # factory, search_params, recall, edges, edges_kept
    paths: list[str]
    clusters: list[Cluster]
    csv: Path
    sheet: Path
    links: Path | None = None
    link_count: int = 0
    score: dict | None = None
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def singletons(self) -> int:
        return sum(1 for cluster in self.clusters if cluster.size == 1)

    def cluster_json(self, cluster: Cluster) -> dict:
        cohesion = None if cluster.cohesion is None else round(cluster.cohesion, 6)
        return {"id": cluster.id, "size": cluster.size, "representative": self.paths[cluster.representative],
                "cohesion": cohesion, "paths": [self.paths[m] for m in cluster.members]}

    def to_json(self) -> dict:
        document = {
            "source": self.source, "model": str(self.model_path) if self.model_path else None, "method": self.method,
            "threshold": round(self.threshold, 6), "threshold_source": self.threshold_source, "k": self.k,
            "images": len(self.paths), "cluster_count": len(self.clusters), "singletons": self.singletons,
            "largest": self.clusters[0].size if self.clusters else 0, "graph": self.graph,
            "csv": str(self.csv), "contact_sheet": str(self.sheet), "links": str(self.links) if self.links else None,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped], "seconds": round(self.seconds, 3),
        }
        if self.score is not None:
            document["score"] = self.score
        document["clusters"] = [self.cluster_json(cluster) for cluster in self.clusters]
        return document


def cluster_images(options: ClusterOptions, events: Events = NO_EVENTS) -> ClusterResult:
    """The whole of `siamcli cluster` (module docstring)."""
    started = time.perf_counter()
    validate_options(options)
    images = open_index(options) if options.index is not None else open_folder(options)
    threshold, threshold_source = cluster_threshold(options, images.model_path.parent if images.model_path else None, images.fingerprint)
    out = _check_outputs(options, images)
    if options.score:
        _check_identities(images)
    vectors = load_vectors(images, options.batch_size, events)
    graph = knn_graph(vectors, options.k, threshold, events, options.seed)
    labels = cluster_labels(graph, threshold, options.method, options.seed, events)
    events.stage("describing the clusters")
    clusters = clusters_from_labels(labels, vectors)
    del vectors
    edges = graph.similarity.nnz // 2
    kept = int((graph.similarity.data >= threshold).sum()) // 2
    result = ClusterResult(
        source=images.origin, model_path=images.model_path, method=options.method, threshold=threshold,
        threshold_source=threshold_source, k=graph.k, paths=images.paths, clusters=clusters, csv=out / CSV_FILE,
        sheet=out / SHEET_FILE, skipped=images.skipped,
        graph={"factory": graph.factory, "search_params": graph.search_params, "recall": round(graph.recall, 4), "edges": edges,
               "edges_kept": kept},
    )
    del graph
    if options.score:
        result.score = score_clusters(images.identities, labels_of(clusters, len(images.paths)))
    _write_outputs(result, options, events)
    result.seconds = time.perf_counter() - started
    return result


def _check_outputs(options: ClusterOptions, images: Images) -> Path:
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for {CSV_FILE} and {SHEET_FILE}")
    named = [("--out", out)] + ([("--link-to", Path(options.link_to))] if options.link_to else [])
    for option, path in named:
        for gallery in images.galleries:
            if _inside(path, Path(gallery)):
                raise UserError(f"{option} {path} is inside {gallery}, which is being clustered: what it writes there would be "
                                f"clustered next time; choose a {option} folder outside it")
    if options.link_to:
        check_link_folder(Path(options.link_to), options.force)
    return out


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_identities(images: Images) -> None:
    """--score needs every image in an identity sub-folder."""
    loose = [path for path, identity in zip(images.paths, images.identities) if not identity]
    if loose:
        raise UserError(f"--score compares the clusters with identity sub-folders, but {len(loose)} image(s) sit at the top of "
                        f"{images.origin} (e.g. {loose[0]}); put each image in its identity's folder, or drop --score")


def _write_outputs(result: ClusterResult, options: ClusterOptions, events: Events) -> None:
    import pandas as pd

    events.stage(f"writing {result.csv} and {result.sheet}")
    labels = labels_of(result.clusters, len(result.paths))
    write_csv(result.csv, pd.DataFrame({"path": result.paths, "cluster": labels.astype(np.int64)}))
    write_contact_sheet(result.sheet, result.clusters, result.paths)
    if options.link_to:
        events.stage(f"linking the images into {options.link_to}")
        result.links = Path(options.link_to)
        result.link_count = write_links(result.links, result.clusters, result.paths)
