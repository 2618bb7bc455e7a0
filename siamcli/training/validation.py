"""Scoring an epoch on the validation set: P@1 and MAP@R of the held-out identities' images.

The validation set holds the held-out identities' images and, when few identities are held out,
held-out images of training identities (adaptive.py). Only the held-out identities' images are
queries; every validation image is in the gallery, so the training identities' images stand
there as distractors and the score stays open-set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from siamcli.evaluation.metrics import evaluate_retrieval
from siamcli.models.embed import embed


@dataclass(frozen=True)
class Scores:
    """One model's validation scores, and each query's AP@R (for the paired test against the start)."""

    precision_at_1: float = float("nan")
    map_at_r: float = float("nan")
    average_precision: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def measured(self) -> bool:
        """False when there was no query to score (NaN)."""
        return self.map_at_r == self.map_at_r

    def metrics(self) -> dict:
        return {"precision_at_1": self.precision_at_1, "map_at_r": self.map_at_r}


class Validation:
    """The validation images' labels and which of them are queries."""

    def __init__(self, labels: np.ndarray, held_out_identities: int):
        self.labels = labels  # validation labels below held_out_identities: the held-out identities
        self.held_out_identities = held_out_identities

    def score(self, embeddings: np.ndarray) -> Scores:
        found = evaluate_retrieval(embeddings, self.labels, ks=(1,))
        queries = found.is_query & (self.labels < self.held_out_identities)
        if not queries.any():
            return Scores(average_precision=found.average_precision[queries])
        return Scores(precision_at_1=float(np.mean(self.labels[found.nearest[queries]] == self.labels[queries])),
                      map_at_r=float(np.mean(found.average_precision[queries])),
                      average_precision=found.average_precision[queries])

    def score_head(self, head, features: np.ndarray) -> Scores:
        """The scores of `head` on the validation images' cached backbone features ((views, n, d): view 0)."""
        return self.score(embed(head, features[0], batch_size=256).vectors)
