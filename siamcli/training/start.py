"""A run's start model (start_model.py's math): fitted on the cached training features, its
pixel weight chosen, and set on a head when the trainer needs it.

The pixel weight is the candidate (start_model.PIXEL_WEIGHTS) whose start scores best: on the
identity folds when they choose the frozen length, else on the held-out identities, else the
default.
"""

from __future__ import annotations

import numpy as np

from siamcli.events import Events
from siamcli.models import embedding as nets
from siamcli.training import folds, start_model
from siamcli.training.config import TrainConfig
from siamcli.training.features import FeatureCache
from siamcli.training.start_model import PixelWeight, StartFit
from siamcli.training.validation import Validation


class Start:
    """The start model: `pixel` (a resumed run's, or chosen by `fit`)."""

    def __init__(self, config: TrainConfig, cache: FeatureCache, validation: Validation, pixel_dims: int,
                 pixel: PixelWeight, events: Events):
        self.config, self.cache, self.validation, self.events = config, cache, validation, events
        self.pixel_dims = pixel_dims  # the thumbnail's columns at the end of the backbone's output (0: none)
        self.pixel = pixel

    def fit(self, head, fold_data: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Fit the start on the training features, choose its pixel weight, and set `head` to it.
        `fold_data`: (features, labels) of all the run's images when identity folds are used."""
        train_features, val_features = self.cache.get()
        fit = start_model.fit_start(head, train_features.reshape(-1, train_features.shape[-1]), self.pixel_dims)
        self.pixel = self._choose_pixel_weight(head, fit, fold_data, val_features)
        start_model.set_head(head, fit, self.pixel.weight)

    def set(self, head) -> None:
        """`head` ← the start model fitted on the training features, with the run's pixel weight."""
        train_features, _ = self.cache.get()
        start_model.init_head_to_pass_on(head, train_features.reshape(-1, train_features.shape[-1]), self.pixel.weight, self.pixel_dims)

    def average_precision(self) -> np.ndarray:
        """The start's per-query validation AP@R, from a new head set to it (a resumed run's start is not at hand)."""
        train_features, val_features = self.cache.get()
        head = nets.build_head(self.config.embedding_dim, train_features.shape[-1], self.config.dropout)
        self.set(head)
        return self.validation.score_head(head, val_features).average_precision

    def _choose_pixel_weight(self, head, fit: StartFit, fold_data, val_features: np.ndarray | None) -> PixelWeight:
        """`head` is set to each candidate in turn."""
        if not self.pixel_dims:
            return PixelWeight(weight=0.0)
        scores, chosen_by = None, ""
        if fold_data is not None:
            scores, chosen_by = folds.start_scores(*fold_data, self.config, self.pixel_dims), "identity folds"
        if scores is None and val_features is not None and self.validation.held_out_identities:
            scores = start_model.scores_by_weight(head, fit, lambda start: self.validation.score_head(start, val_features).map_at_r)
            chosen_by = "validation"
        if not scores or any(score != score for score in scores.values()):  # NaN: nothing to score
            return PixelWeight()
        chosen = PixelWeight(start_model.best_pixel_weight(scores), chosen_by, {f"{weight:g}": score for weight, score in scores.items()})
        self.events.stage("start model's pixel weight")
        self.events.result(f"{chosen.weight:g}, chosen by {chosen_by} (start MAP@R for pixel weight "
                           + ", ".join(f"{weight:g}: {score:.3f}" for weight, score in scores.items()) + ")")
        return chosen
