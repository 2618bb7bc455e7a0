"""The model a run starts from, and the rule that a run never ends worse than it.

The start model is the backbone's features passed on by the head, before any training step:

    features → standardise (the head's BatchNorm holds the training features' mean and variance)
             → PCA projection to embedding_dim (the head's Dense kernel) → L2-normalise

so its distances are those of the standardised backbone features, kept to their
`embedding_dim` main directions. (Measured on unseen identities, from scratch: ORL 0.724 MAP@R
against 0.664 for the L2-normalised raw features and 0.692 for centred ones; digits 0.602
against 0.560 and 0.560.) The trainer scores it on the validation set as "epoch 0" before any step;
model selection keeps the best epoch *including* epoch 0 (`prefer`): a trained epoch replaces
the start only if it scores at least as well on validation MAP@R, and a later trained epoch
replaces an earlier one only if it scores strictly better. When no trained epoch reaches the
start, model.keras is the start model and the run says so (`verdict`).
"""

from __future__ import annotations

import numpy as np

START_EPOCH = 0  # the epoch number the start model is recorded under


def pca_directions(features: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims) orthonormal columns: the main directions of the centred `features` (n, d).

    With fewer samples than `dims`, the columns past the data's rank are zero: the start then
    passes on every direction the data has; training can still grow the others.
    """
    features = np.asarray(features, np.float64)
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: directions, largest first
    kernel = np.zeros((features.shape[1], dims), np.float64)
    keep = min(dims, vt.shape[0])
    kernel[:, :keep] = vt[:keep].T
    # A sign convention, so the start does not depend on the SVD routine's choice.
    signs = np.sign(kernel[np.abs(kernel).argmax(axis=0), np.arange(dims)])
    return kernel * np.where(signs == 0, 1.0, signs)


def init_head_to_pass_on(head, features: np.ndarray) -> None:
    """Set `head` (feature_norm BatchNorm → [dropout] → projection → l2) to the start model.

    BatchNorm: moving mean and variance = the features' (gamma 1, beta 0), so it standardises
    them, in inference as in training (batch statistics). Projection: the PCA directions of the
    standardised features, bias 0.
    """
    features = np.asarray(features, np.float64)
    norm = head.get_layer("feature_norm")
    mean, variance = features.mean(axis=0), features.var(axis=0)
    norm.moving_mean.assign(mean.astype(np.float32))
    norm.moving_variance.assign(variance.astype(np.float32))
    norm.gamma.assign(np.ones_like(mean, np.float32))
    norm.beta.assign(np.zeros_like(mean, np.float32))
    standardised = (features - mean) / np.sqrt(variance + norm.epsilon)
    projection = head.get_layer("projection")
    projection.kernel.assign(pca_directions(standardised, int(projection.kernel.shape[-1])).astype(np.float32))
    projection.bias.assign(np.zeros(int(projection.kernel.shape[-1]), np.float32))


def prefer(score: float, best_score: float, best_epoch: int | None) -> bool:
    """Does an epoch scoring `score` replace the kept one (epoch `best_epoch`, `best_score`)?

    Over the start (epoch 0) a trained epoch wins ties: equal validation scores cannot tell
    them apart, and only a strictly worse one proves training hurt. Between trained epochs the
    earlier one keeps a tie.
    """
    if best_epoch == START_EPOCH:
        return score >= best_score
    return score > best_score


def not_worse(average_precision: np.ndarray, start_average_precision: np.ndarray) -> bool:
    """Paired test over the same validation queries: is a model's AP@R not clearly below the start's?

    Clearly below: the mean per-query difference is under −2 standard errors (queries of one
    identity are not independent, so this errs towards calling a drop real).
    """
    difference = np.asarray(average_precision, np.float64) - np.asarray(start_average_precision, np.float64)
    if len(difference) < 2:
        return bool(difference.mean() >= 0) if len(difference) else True
    error = difference.std(ddof=1) / np.sqrt(len(difference))
    return bool(difference.mean() >= -2 * error)


def verdict(start: dict | None, best_epoch: int | None, best: dict, trained_scores: list[float],
            fold_curve: list[float] | None = None) -> str | None:
    """One plain line comparing the kept model with the start on validation, or None without a start score."""
    if not start or start.get("map_at_r") is None:
        return None
    if best_epoch == START_EPOCH:
        trained_scores = [s for s in trained_scores if s == s]  # NaN: an epoch without validation
        if not trained_scores:
            return f"no epoch was trained: model.keras is the start model (val MAP@R {start['map_at_r']:.3f})"
        return (f"no trained epoch beat the start model on validation (start MAP@R {start['map_at_r']:.3f}, "
                f"best trained epoch {max(trained_scores):.3f}): model.keras is the start model "
                "(backbone features through a PCA projection)")
    gain = best["map_at_r"] - start["map_at_r"]
    line = (f"kept epoch {best_epoch}: val MAP@R {best['map_at_r']:.3f} against {start['map_at_r']:.3f} for the start model "
            f"({gain:+.3f})")
    if fold_curve and best.get("phase") == "frozen" and best_epoch < len(fold_curve):
        line += (f"; its length chosen by identity folds: MAP@R {fold_curve[best_epoch]:.3f} against {fold_curve[0]:.3f} "
                 "for the start")
    return line
