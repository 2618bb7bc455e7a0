"""How many frozen-phase epochs help, measured by rotating folds over identities.

With few held-out identities, validation MAP@R cannot measure: among 4 people retrieval is
easy whatever the model (on ORL, 4-identity subsets of the unseen s21–s40 score 0.880 with the
start model and 0.892 with a trained head, against 0.735 and 0.808 over all 20). So, when fewer
than `BY_DATA.min_val_identities` (training/config.py) identities are held out, the frozen phase's length is chosen
by two-fold cross-validation over *all* the run's identities (training and held-out):

    the identities are split in two halves (seeded); for each half, a head starts from its own
    start model (PCA of the other half's features), trains on the other half for up to
    `frozen_epochs` epochs of the run's length, and scores the half it never saw after every
    epoch (MAP@R, the half's identities among themselves, clean images); the two folds train
    in step and stop once their mean has not improved for `patience` epochs;
    the curve is the mean of the two halves' scores per epoch, epoch 0 being the start models
    (the same folds' start models, one per candidate pixel weight, choose that weight first:
    `start_scores`);
    the frozen phase then trains the real head (on the training identities only) for the
    curve's best epoch count (0: the start model is kept; a tie goes to the trained epoch).

`--patience 0` (never stop early) turns the folds off: the frozen phase then runs all its
epochs and the held-out identities select as usual. Each fold trains on half the identities, so the curve tends to peak early: a conservative
choice. The measurement heads are thrown away; only the curve is kept (config.json, state).
"""

from __future__ import annotations

import numpy as np

from siamcli.data.pipeline import PKSampler, pk_batches
from siamcli.evaluation.metrics import retrieval_metrics
from siamcli.events import Events
from siamcli.models import embedding as nets
from siamcli.models.embed import embed
from siamcli.training.config import TrainConfig
from siamcli.training.start_model import fit_start, init_head_to_pass_on, prefer, scores_by_weight
from siamcli.training.step import StepPlan

FOLDS = 2
MIN_IDENTITIES_PER_FOLD = 2


def fold_assignment(labels: np.ndarray, seed: int) -> np.ndarray | None:
    """(n,) fold index per image, by identity; None when some fold would lack 2 identities with 2+ images."""
    identities = np.unique(labels)
    usable = [i for i in identities if np.sum(labels == i) >= 2]
    if len(usable) < FOLDS * MIN_IDENTITIES_PER_FOLD:
        return None
    order = np.random.default_rng([seed, 7]).permutation(usable)
    fold_of = {identity: position % FOLDS for position, identity in enumerate(order)}
    return np.array([fold_of.get(label, -1) for label in labels], np.int64)


def run_labels(train_names: list[str], train_labels: np.ndarray, val_names: list[str], val_labels: np.ndarray) -> np.ndarray:
    """One label per image of the run (training images, then validation images), in one label space."""
    index = {name: i for i, name in enumerate(dict.fromkeys(train_names + val_names))}
    return np.array([index[train_names[i]] for i in train_labels] + [index[val_names[i]] for i in val_labels], np.int64)


def best_epoch(curve: list[float]) -> int:
    """The epoch count to keep: the curve's best, epoch 0 (the start) losing ties to trained epochs."""
    best, best_score = 0, curve[0]
    for epoch, score in enumerate(curve[1:], start=1):
        if prefer(score, best_score, best):
            best, best_score = epoch, score
    return best


def cross_validate(features: np.ndarray, labels: np.ndarray, plan: StepPlan, pixel_weight: float, pixel_dims: int,
                   events: Events) -> list[float] | None:
    """Mean held-out-fold MAP@R after 0, 1, … epochs (see the module docstring), or None.

    `features`: (views, n, d) cached backbone features of all the run's images (view 0 clean),
    whose last `pixel_dims` columns are the thumbnail; `labels`: (n,) identity per image. Each
    fold's head starts from its start model with `pixel_weight` and trains as the run's frozen
    phase does (`plan`: the run's options, strategy, epoch length and P). The folds train in
    step, epoch by epoch, and stop after `frozen_epochs`, or once the mean has not improved for
    `patience` epochs.
    """
    config = plan.config
    assignment = fold_assignment(labels, config.seed)
    if assignment is None:
        return None
    epochs, runs = config.frozen_epochs, []
    for fold in range(FOLDS):
        train, held = assignment != fold, assignment == fold
        with plan.strategy.scope():
            head = nets.build_head(config.embedding_dim, features.shape[-1], config.dropout)
            init_head_to_pass_on(head, features[:, train].reshape(-1, features.shape[-1]), pixel_weight, pixel_dims)
        step = plan.train_step(head, config.lr, epochs)
        _, train_labels = np.unique(labels[train], return_inverse=True)
        sampler = PKSampler(train_labels, plan.identities_per_batch, config.images_per_identity, config.seed + 1000 * (fold + 1))
        runs.append((fold, train, held, head, step, train_labels.astype(np.int32), sampler))
    curve = [float(np.mean([_score(head, features[0, held], labels[held]) for _, _, held, head, *_ in runs]))]
    for epoch in range(1, epochs + 1):
        scores = []
        events.stage(f"frozen length by folds, epoch {epoch}/{epochs}", FOLDS * plan.steps_per_epoch)
        for fold, train, held, head, step, train_labels, sampler in runs:
            views = features[:, train] if len(features) > 1 else features[0, train]
            seed = config.seed + 1000 * (fold + 1)
            dataset = pk_batches(views, train_labels, sampler, plan.steps_per_epoch, augment=False, seed=seed + epoch, views=len(features))
            for _ in step.run(dataset, seed, epoch):
                events.advance(1, f"fold {fold + 1}/{FOLDS}")
            scores.append(_score(head, features[0, held], labels[held]))
        curve.append(float(np.mean(scores)))
        events.result(f"held-out-fold MAP@R {curve[-1]:.3f} (start {curve[0]:.3f})")
        if config.patience and epoch - best_epoch(curve) >= config.patience:
            break
    return curve


def describe(curve: list[float]) -> str:
    """The frozen length the curve chooses, and the curve, in one line."""
    target = best_epoch(curve)
    return (f"{target} epoch{'s' if target != 1 else ''}, chosen by {FOLDS}-fold cross-validation over identities "
            f"(held-out-fold MAP@R after 0…{len(curve) - 1} epochs: {' '.join(f'{v:.3f}' for v in curve)})")


def start_scores(features: np.ndarray, labels: np.ndarray, config: TrainConfig, pixel_dims: int) -> dict[float, float] | None:
    """Mean held-out-fold MAP@R of the start model for each candidate pixel weight, or None
    (too few identities for folds). Arguments as for `cross_validate`."""
    assignment = fold_assignment(labels, config.seed)
    if assignment is None:
        return None
    head = nets.build_head(config.embedding_dim, features.shape[-1], 0.0)
    per_fold = []
    for fold in range(FOLDS):
        train, held = assignment != fold, assignment == fold
        fit = fit_start(head, features[:, train].reshape(-1, features.shape[-1]), pixel_dims)
        held_features, held_labels = features[0, held], labels[held]
        per_fold.append(scores_by_weight(head, fit, lambda start, x=held_features, y=held_labels: _score(start, x, y)))
    return {weight: float(np.mean([scores[weight] for scores in per_fold])) for weight in per_fold[0]}


def _score(head, features: np.ndarray, labels: np.ndarray) -> float:
    return retrieval_metrics(embed(head, features, batch_size=256).vectors, labels, ks=(1,)).map_at_r
