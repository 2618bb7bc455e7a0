"""A folder in, duplicate groups out: `siamcli dedupe FOLDER` without its moves.

Every image under FOLDER (recursively, as `siamcli index` scans a gallery) is read once
(keys.py); exact copies are joined by sha256 and only one of each is compared further. Near
duplicates come from one of three methods (pairs.py):
  * perceptual (default): dhash within HASH_RADIUS bits; with `crops`, also the crop check;
  * embedding (`model`): the run's embeddings (loaded and computed as `siamcli query` does);
  * against an index (`against`, against.py): also compared with an indexed gallery.
Groups are the connected components of the pairs (groups.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from siamcli.data.scan import Skipped, scan_folder
from siamcli.dedupe import pairs as near
from siamcli.dedupe.groups import check_keep, component_labels
from siamcli.dedupe.keys import HASH_NAME, THUMB_SIDE, read_keys
from siamcli.dedupe.result import DedupeOptions, DedupeResult, build_result
from siamcli.dedupe.thresholds import ALIGNED_MIN, EMBEDDING_MIN, HASH_RADIUS
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events


def find_duplicates(folder: str | os.PathLike, options: DedupeOptions | None = None, events: Events = NO_EVENTS) -> DedupeResult:
    options = options or DedupeOptions()
    check_options(options)
    scan = scan_folder(folder, labelled=False)
    if not scan.items:
        raise UserError(f"{folder} holds no images; give a folder of images (sub-folders are searched too)")
    paths = [item.path for item in scan.items]
    if options.against is not None:
        from siamcli.dedupe.against import against_index

        return against_index(Path(folder), paths, scan.skipped, options, events)
    method = _embedding if options.model is not None else _perceptual
    return method(Path(folder), paths, scan.skipped, options, events)


def check_options(options: DedupeOptions) -> None:
    check_keep(options.keep)
    if options.workers < 1:
        raise UserError(f"--workers must be at least 1, got {options.workers}")
    if options.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {options.batch_size}")
    embedding = options.model is not None or options.against is not None
    if options.threshold is not None:
        if not embedding:
            raise UserError("--threshold is a cosine similarity of embeddings: it needs --model RUN or --against INDEX")
        if not -1.0 <= options.threshold <= 1.0:
            raise UserError(f"--threshold {options.threshold} is not a cosine similarity; give a value from -1 to 1")
    if options.crops is not None and embedding:
        raise UserError("--crops and --no-crops belong to the perceptual method; leave them out with --model or --against")


def _perceptual(folder: Path, paths: list[str], skipped: list[Skipped], options: DedupeOptions, events: Events) -> DedupeResult:
    with tempfile.TemporaryDirectory(prefix="siamcli-dedupe-") as scratch:
        # the crop check's thumbnails (4 KiB an image) wait on disk, not in memory
        thumbs = np.memmap(Path(scratch) / "thumbs", np.uint8, "w+", shape=(len(paths), THUMB_SIDE, THUMB_SIDE)) if options.crops is not False else None
        keys = read_keys(paths, perceptual=True, workers=options.workers, events=events, thumbs=thumbs)
        events.stage("searching pairs")
        exact = near.exact_pairs(keys.sha256)
        first = near.leaders(keys.count, exact)
        found = [exact, near.lifted(near.hash_pairs(keys.codes[first]), first)]
        threshold = {"hash": HASH_NAME, "hash_radius": HASH_RADIUS}
        counts = {"exact": len(exact[0]), "hash": len(found[1][0])}
        if thumbs is not None:
            labels = component_labels(keys.count, *near.joined(found))
            cropped, checked = near.crop_pairs(thumbs, first, labels, events)
            found.append(cropped)
            threshold["aligned_min"] = ALIGNED_MIN
            counts.update(crop=len(cropped[0]), crop_checked=checked)
    return build_result(folder, "perceptual", threshold, keys, skipped, found, counts, options)


def _embedding(folder: Path, paths: list[str], skipped: list[Skipped], options: DedupeOptions, events: Events) -> DedupeResult:
    from siamcli.dedupe.embedded import embed_folder
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model
    from siamcli.rundir import find_run

    run = find_run(options.model)
    model = load_embedding_model(run.model)
    folder_images = embed_folder(
        paths, lambda images: embed(model, images, batch_size=options.batch_size, on_progress=events.advance), options.workers, events)
    threshold = EMBEDDING_MIN if options.threshold is None else options.threshold
    events.stage("searching pairs")
    first, second, _ = near.nearest_pairs(folder_images.vectors, near.NEIGHBOURS, minimum=threshold)
    found = [folder_images.exact, near.lifted((first, second), folder_images.leaders)]
    counts = {"exact": len(folder_images.exact[0]), "embedding": len(first)}
    return build_result(folder, "embedding", {"cosine_min": threshold, "model": str(run.model)}, folder_images.keys, skipped, found,
                        counts, options)
