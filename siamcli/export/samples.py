"""The images every export is checked on: the run's held-out images, else random pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamcli import rundir
from siamcli.errors import UserError

MAX_RETRIEVAL_IMAGES = 500  # held-out images embedded to measure the quantised model's retrieval cost


@dataclass
class Samples:
    pixels: np.ndarray  # (n, S, S, 3) uint8, what every export is checked on
    labels: list[str] | None  # identities, when the run's held-out images were found
    source: str  # in words


def held_out_samples(paths: rundir.RunPaths, size: int, count: int, retrieval: bool) -> Samples:
    """The run's held-out images (all of them, up to MAX_RETRIEVAL_IMAGES, when measuring
    retrieval), or random pixels when its data folder is gone."""
    from siamcli.evaluation.selection import select_data
    from siamcli.models.embed import load_pixels

    reason = "the run has no held-out images"
    try:
        items = select_data(paths, None).items
    except UserError as exc:  # no data folder, no split: check on random pixels instead
        items, reason = [], str(exc).split(";")[0]
    if items:
        wanted = MAX_RETRIEVAL_IMAGES if retrieval else count
        spread = np.unique(np.linspace(0, len(items) - 1, min(wanted, len(items))).round().astype(int))
        chosen = [items[i] for i in spread]  # spread over every identity, not the first few
        loaded = load_pixels([item.path for item in chosen], size)
        if len(loaded.kept) >= 2:
            labels = [chosen[i].label for i in loaded.kept]
            identities = len(set(labels))
            return Samples(loaded.images, labels, f"{len(labels)} held-out images of {identities} identit{'y' if identities == 1 else 'ies'}")
        reason = "the held-out images did not decode"
    rng = np.random.default_rng(0)
    return Samples(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), None, f"{count} random images ({reason})")
