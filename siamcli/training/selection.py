"""Model selection: which epoch model.keras holds (start_model.py states the rule).

The start model's validation scores are epoch 0. Each later epoch is judged as it ends: kept
when it is better (`start_model.prefer`), or, when identity folds chose the frozen phase's
length, kept when it is the epoch they chose and not clearly worse than the start
(`start_model.not_worse`, paired per query); a phase without improvement for its patience ends
early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from siamcli.run_config import RunSelection
from siamcli.training import folds
from siamcli.training.checkpoint import TrainerState
from siamcli.training.config import FROZEN, TrainConfig
from siamcli.training.start_model import START_EPOCH, PixelWeight, not_worse, prefer, verdict
from siamcli.training.validation import Scores


@dataclass(frozen=True)
class Judgement:
    """What an epoch's end decided."""

    keep: bool  # model.keras becomes this epoch
    phase_over: bool = False  # the phase ends here: the folds' length reached, or patience ran out
    early_stop: str | None = None  # patience ran out: the line that says so
    warning: str | None = None  # the folds' epoch was not kept: why


class Selection:
    """The start's score, the kept epoch, the folds' curve and patience, from a run's state."""

    def __init__(self, config: TrainConfig, state: TrainerState):
        self.config = config
        self.start_metrics = dict(state.start_metrics)
        self.best_epoch, self.best_score, self.best_metrics = state.best_epoch, state.best_score, dict(state.best_metrics)
        self.fold_curve = list(state.fold_curve)
        self.epochs_since_best = state.epochs_since_best
        self.start_ap: np.ndarray | None = None  # the start's per-query AP@R; after a resume, found when needed

    def keep_start(self, scores: Scores) -> bool:
        """Epoch 0: record the start's scores; it is the kept model when they measure anything."""
        self.start_metrics, self.start_ap = scores.metrics(), scores.average_precision
        if not scores.measured:
            return False
        self.best_score, self.best_epoch = scores.map_at_r, START_EPOCH
        self.best_metrics = scores.metrics() | {"phase": "start"}
        return True

    @property
    def start_kept(self) -> bool:
        return self.best_epoch == START_EPOCH

    def set_fold_curve(self, curve: list[float]) -> int:
        """The folds' MAP@R after 0, 1, … frozen epochs; returns the length they choose."""
        self.fold_curve = list(curve)
        return folds.best_epoch(curve)

    @property
    def frozen_target(self) -> int | None:
        return folds.best_epoch(self.fold_curve) if self.fold_curve else None

    def planned(self, phase: str) -> int:
        """The phase's length: the options', or for the frozen phase the one the folds chose."""
        if phase != FROZEN:
            return self.config.finetune_epochs
        target = self.frozen_target
        return self.config.frozen_epochs if target is None else target

    def restart_patience(self) -> None:
        """A phase starts: patience counts its own epochs."""
        self.epochs_since_best = 0

    def judge(self, epoch: int, phase: str, scores: Scores | None, epochs_left: int,
              start_ap: Callable[[], np.ndarray]) -> Judgement:
        """Epoch `epoch` of `phase` has ended with `scores` (None: no validation); `epochs_left`
        in the phase after it; `start_ap` gives the start's per-query AP@R if it is not at hand."""
        score = scores.map_at_r if scores is not None else float(epoch)
        target = self.frozen_target if phase == FROZEN else None
        if target is None:
            keep, over = prefer(score, self.best_score, self.best_epoch), False
        else:  # the folds chose the frozen length: that epoch, and the phase ends there
            keep, over = epoch == target, epoch >= target
        warning = None
        if over and keep and not self._not_worse_than_start(scores, start_ap):
            keep = False
            warning = (f"frozen epoch {epoch}, the length the folds chose, is clearly worse than the start model on the held-out "
                       "identities (paired per-query AP@R): the start model is kept")
        if keep:
            self.best_score, self.best_epoch, self.epochs_since_best = score, epoch, 0
            self.best_metrics = (scores or Scores()).metrics() | {"phase": phase}
            return Judgement(keep=True, phase_over=over)
        self.epochs_since_best += 1
        patience = self.config.patience if phase == FROZEN else self.config.finetune_patience
        if target is None and patience and self.epochs_since_best >= patience and epochs_left > 0:
            return Judgement(keep=False, phase_over=True, early_stop=f"early stop of the {phase} phase after epoch {epoch}: validation MAP@R has "
                             f"not improved for {patience} epoch{'s' if patience > 1 else ''}")
        return Judgement(keep=False, phase_over=over, warning=warning)

    def _not_worse_than_start(self, scores: Scores, start_ap: Callable[[], np.ndarray]) -> bool:
        """The folds chose this epoch; the held-out identities may still show it clearly worse than the start."""
        if self.start_ap is None:  # resumed: the start's scores are not at hand
            self.start_ap = start_ap()
        return not_worse(scores.average_precision, self.start_ap)

    def verdict(self, trained_scores: list[float]) -> str | None:
        """The one line comparing the kept model with the start (None without a start score)."""
        return verdict(self.start_metrics, self.best_epoch, self.best_metrics, trained_scores, self.fold_curve)

    def state(self) -> dict:
        """The TrainerState fields a checkpoint keeps of this."""
        return {"start_metrics": self.start_metrics, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "best_metrics": self.best_metrics, "fold_curve": self.fold_curve, "epochs_since_best": self.epochs_since_best}

    def record(self, line: str, pixel: PixelWeight) -> RunSelection:
        """config.json's `selection`."""
        return RunSelection(start=self.start_metrics, kept_epoch=self.best_epoch, kept=self.best_metrics, line=line,
                            frozen_length_by_folds=self.fold_curve or None, pixel_weight=pixel.weight,
                            pixel_weight_chosen_by=pixel.chosen_by, pixel_weight_scores=pixel.scores or None)
