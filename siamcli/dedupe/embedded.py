"""The folder's images as a model sees them (--model, --against): keys, exact copies, embeddings.

Each distinct content is embedded once (copies share their first file's vector); an image the
model's decoder cannot read is skipped with its copies, named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from siamcli.data.scan import Skipped
from siamcli.dedupe.groups import component_labels
from siamcli.dedupe.keys import Keys, read_keys
from siamcli.dedupe.pairs import Pairs, exact_pairs, leaders
from siamcli.events import Events


@dataclass
class EmbeddedFolder:
    keys: Keys  # the images that decoded
    exact: Pairs  # copies: each row joined to the first with its sha256
    leaders: np.ndarray  # one row per distinct content …
    vectors: np.ndarray  # … and its unit embedding, row for row


def embed_folder(paths: Sequence[str], embed: Callable[[list[str]], object], workers: int, events: Events) -> EmbeddedFolder:
    """`embed(paths)` returns an Embedded (models.embed: vectors, kept positions, failures)."""
    keys = read_keys(paths, perceptual=False, workers=workers, events=events)
    exact = exact_pairs(keys.sha256)
    first = leaders(keys.count, exact)
    events.stage("embedding images", len(first))
    embedded = embed([keys.paths[r] for r in first])
    if embedded.failures:
        keys = _without(keys, exact, first, np.asarray(embedded.kept, np.int64), embedded.failures)
        exact = exact_pairs(keys.sha256)
        first = leaders(keys.count, exact)
    return EmbeddedFolder(keys, exact, first, embedded.vectors)


def _without(keys: Keys, exact: Pairs, first: np.ndarray, kept: np.ndarray, failures: list[Skipped]) -> Keys:
    """The keys without the leaders the model could not decode, nor their copies."""
    failed = np.zeros(keys.count, bool)
    failed[first] = True
    failed[first[kept]] = False
    labels = component_labels(keys.count, *exact)
    reasons = {int(labels[row]): failure.reason for row, failure in zip(np.flatnonzero(failed), failures)}
    dropped = np.flatnonzero(np.isin(labels, list(reasons)))
    skipped = [Skipped(keys.paths[r], reasons[int(labels[r])]) for r in dropped]
    return keys.subset(np.flatnonzero(~np.isin(labels, list(reasons))), skipped)
