"""The model a run starts from, and the rules that compare trained epochs with it.

The start model is the backbone's output passed on by the head, before any training step. The
backbone's output has two blocks (models/embedding.py): the CNN's pooled features and a 16×16
thumbnail of the image. The head maps each block to its own columns of the embedding:

    CNN features → standardise → PCA to the first 3/4 of embedding_dim ┐ × √(1 − w) ┐
    thumbnail    → centre      → PCA to the last  1/4 of embedding_dim ┘ × √w      ┴→ L2-normalise

(BatchNorm holds the training features' mean and variance; its gamma undoes the per-value
scaling of the thumbnail and gives its projection the CNN block's mean squared norm; the Dense
kernel holds both projections weighted by √(1 − w) and √w, so `w` is the share of the distance
that comes from pixels.) So its distances are a weighted sum of the standardised backbone
features' and the pixels', kept to their main directions. `w`, the pixel weight, is chosen from PIXEL_WEIGHTS by validation (the trainer):
no single weight suits all data (faces want a little pixel, small drawings mostly pixels; the
measurements are in docs/training.md).

The trainer writes the start to start.keras and scores it on the validation set as "epoch 0"
before any step. Model selection then keeps, as model.keras:

- without identity folds, the best epoch on validation MAP@R *including* epoch 0 (`prefer`): a
  trained epoch replaces the start if it scores at least as well, a later trained epoch replaces
  an earlier one only if it scores strictly better; model.keras then never scores below the
  start on validation;
- with identity folds (1–9 held-out identities: too few to measure, training/folds.py), in the
  frozen phase only the epoch the folds chose, which replaces the start unless the held-out
  identities show it clearly worse (`not_worse`, a paired test): it may score somewhat below the
  start on validation. Fine-tune epochs then replace the kept model by `prefer`, against the
  kept model's score (the start's only if the start is still kept).

Without validation (nothing held out) model.keras is the last epoch. When no trained epoch is
kept, model.keras is the start model and the run says so; `verdict`
is the one line that compares the kept model with the start, and says when it is below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

START_EPOCH = 0  # the epoch number the start model is recorded under
PIXEL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the start's candidate shares of pixels in the distance
DEFAULT_PIXEL_WEIGHT = 0.25  # without validation to choose: never below the backbone alone on ORL or digits
PIXEL_SHARE_OF_DIMS = 4  # the thumbnail gets 1/4 of the embedding's columns (PCA of pixels saturates early)


def pca_directions(features: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims) orthonormal columns: the main directions of the centred `features` (n, d).

    With fewer samples than `dims`, the columns past the data's rank are zero: the start then
    passes on every direction the data has; training can still grow the others. Computed from
    the eigenvectors of the smaller of XᵀX and XXᵀ (symmetric: always converges, where LAPACK's
    SVD failed on the thumbnails of greyscale photos, whose three channels are equal columns).
    """
    centred = np.asarray(features, np.float64) - np.asarray(features, np.float64).mean(axis=0)
    n, d = centred.shape
    if n >= d:
        values, vectors = np.linalg.eigh(centred.T @ centred)
        directions = vectors[:, ::-1]
    else:
        values, vectors = np.linalg.eigh(centred @ centred.T)
        values, vectors = values[::-1], vectors[:, ::-1]
        rank = int(np.sum(values > values.max(initial=0.0) * n * np.finfo(np.float64).eps))
        directions = centred.T @ vectors[:, :rank] / np.sqrt(values[:rank])
    kernel = np.zeros((d, dims), np.float64)
    keep = min(dims, directions.shape[1])
    kernel[:, :keep] = directions[:, :keep]
    # A sign convention, so the start does not depend on the eigen solver's choice.
    signs = np.sign(kernel[np.abs(kernel).argmax(axis=0), np.arange(dims)])
    return kernel * np.where(signs == 0, 1.0, signs)


@dataclass
class StartFit:
    """What the start model learns from the training features: the head's settings but `w`."""

    mean: np.ndarray  # (d,)
    variance: np.ndarray  # (d,)
    gamma: np.ndarray  # (d,) BatchNorm's scale: 1 for CNN features; for thumbnail values, centred only, one scale
    backbone: np.ndarray  # (d - p, columns) orthonormal PCA directions of the standardised CNN features
    pixels: np.ndarray  # (p, columns) orthonormal PCA directions of the centred thumbnail

    def kernel(self, pixel_weight: float) -> np.ndarray:
        """The head's Dense kernel for pixel share `pixel_weight`: the larger block's directions
        stay orthonormal (Adam's steps then have the size they had before pixels joined)."""
        d, p = len(self.mean), len(self.pixels)
        kernel = np.zeros((d, self.backbone.shape[1] + self.pixels.shape[1]), np.float64)
        scale = max(np.sqrt(1.0 - pixel_weight), np.sqrt(pixel_weight))
        kernel[:d - p, :self.backbone.shape[1]] = np.sqrt(1.0 - pixel_weight) / scale * self.backbone
        kernel[d - p:, self.backbone.shape[1]:] = np.sqrt(pixel_weight) / scale * self.pixels
        return kernel


def fit_start(head, features: np.ndarray, pixel_dims: int) -> StartFit:
    """The start model for `head` (its embedding size and BatchNorm epsilon) from `features`
    (n, d), whose last `pixel_dims` columns are the thumbnail.

    BatchNorm standardises the CNN features and only centres the thumbnail, with one scale
    chosen so that both blocks' projections have the same mean squared norm: `w` alone then
    says how much of the distance comes from pixels.
    """
    embedding_dim = int(head.get_layer("projection").kernel.shape[-1])
    epsilon = head.get_layer("feature_norm").epsilon
    features = np.asarray(features, np.float64)
    mean, variance = features.mean(axis=0), features.var(axis=0)
    split = features.shape[1] - pixel_dims
    deviation = np.sqrt(variance + epsilon)
    standardised, centred = (features[:, :split] - mean[:split]) / deviation[:split], features[:, split:] - mean[split:]
    pixel_columns = embedding_dim // PIXEL_SHARE_OF_DIMS if pixel_dims else 0
    backbone = pca_directions(standardised, embedding_dim - pixel_columns)
    pixels = pca_directions(centred, pixel_columns) if pixel_dims else np.zeros((0, 0))
    energy = _energy(standardised @ backbone), _energy(centred @ pixels)
    pixel_scale = np.sqrt(energy[0] / energy[1]) if energy[0] > 0 and energy[1] > 0 else 1.0
    gamma = np.concatenate([np.ones(split), deviation[split:] * pixel_scale])
    return StartFit(mean, variance, gamma, backbone, pixels)


def _energy(projected: np.ndarray) -> float:
    """Mean squared norm of the rows of `projected` (0 for none)."""
    return float(np.mean(np.sum(projected**2, axis=1))) if projected.size else 0.0


def set_head(head, fit: StartFit, pixel_weight: float) -> None:
    """Set `head` (feature_norm BatchNorm → [dropout] → projection → l2) to the start model with
    pixel share `pixel_weight`, in inference as in training (batch statistics then standardise
    as the moving ones do)."""
    norm = head.get_layer("feature_norm")
    norm.moving_mean.assign(fit.mean.astype(np.float32))
    norm.moving_variance.assign(fit.variance.astype(np.float32))
    norm.gamma.assign(fit.gamma.astype(np.float32))
    norm.beta.assign(np.zeros_like(fit.mean, np.float32))
    projection = head.get_layer("projection")
    projection.kernel.assign(fit.kernel(pixel_weight).astype(np.float32))
    projection.bias.assign(np.zeros(int(projection.kernel.shape[-1]), np.float32))


def init_head_to_pass_on(head, features: np.ndarray, pixel_weight: float, pixel_dims: int) -> None:
    """Fit the start model on `features` (n, d) and set `head` to it (see the module docstring)."""
    set_head(head, fit_start(head, features, pixel_dims), pixel_weight)


def scores_by_weight(head, fit: StartFit, score) -> dict[float, float]:
    """{pixel weight: score(head)} for every candidate in PIXEL_WEIGHTS, `head` set to each start in turn."""
    scores = {}
    for weight in PIXEL_WEIGHTS:
        set_head(head, fit, weight)
        scores[weight] = score(head)
    return scores


@dataclass(frozen=True)
class PixelWeight:
    """The start's share of pixels, what chose it ("identity folds", "validation" or "default"),
    and each candidate's score (weight as text → MAP@R)."""

    weight: float = DEFAULT_PIXEL_WEIGHT
    chosen_by: str = "default"
    scores: dict = field(default_factory=dict)


def best_pixel_weight(scores: dict[float, float]) -> float:
    """The pixel weight whose start scored best; a tie goes to the smaller weight (the learnable features)."""
    return max(sorted(scores), key=lambda weight: (scores[weight], -weight))


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
                "(backbone features and pixels through PCA)")
    gain = best["map_at_r"] - start["map_at_r"]
    line = (f"kept epoch {best_epoch}: val MAP@R {best['map_at_r']:.3f} against {start['map_at_r']:.3f} for the start model "
            f"({gain:+.3f}{', below the start on validation' if gain < 0 else ''})")
    if fold_curve and best.get("phase") == "frozen" and best_epoch < len(fold_curve):
        line += (f"; its length chosen by identity folds: MAP@R {fold_curve[best_epoch]:.3f} against {fold_curve[0]:.3f} "
                 "for the start")
    return line
