"""Verification: are two images the same identity? ROC AUC, equal error rate, match threshold.

Pairs: every unordered pair of distinct images, when there are at most `max_pairs` of them.
Past that, a seeded sample: every same-identity pair if there are at most max_pairs / 2 of
them (else max_pairs / 2 drawn uniformly, with replacement), plus max_pairs / 2
different-identity pairs drawn uniformly with replacement. ROC AUC and EER are rates within
each class of pairs, so sampling the two classes separately leaves them unbiased.

A pair matches when its squared Euclidean distance is ≤ the threshold. The ROC curve sweeps the
threshold over every distance seen. The EER is where the false-match rate (FPR) equals the
false-non-match rate (FNR = 1 − TPR): found between the two ROC points that bracket the
crossing and linearly interpolated (EER and threshold alike); when the two rates are exactly
equal on a step of the curve, the threshold is the middle of that step (for perfectly separated
pairs: halfway between the farthest same-identity pair and the nearest different-identity one).
ROC AUC is the area under the curve, i.e. P(d_same < d_different) + ½·P(d_same = d_different),
scikit-learn's roc_auc_score with score = −distance.

The curve is scikit-learn's `roc_curve` (score = −distance, every threshold kept); the area its
`auc` of that curve (what `roc_auc_score` computes, without sorting the pairs a second time).
At the 5,000,000 pairs of DEFAULT_MAX_PAIRS that costs a few float64/int64 copies of the pairs:
about 0.3 GB at peak. The EER is computed here: scikit-learn has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

DEFAULT_MAX_PAIRS = 5_000_000
_PAIRS_PER_CHUNK = 1 << 18  # distances per block of the all-pairs pass
_CHUNK_BYTES = 64 << 20  # float64 differences per chunk of sampled pairs


@dataclass(frozen=True)
class PairDistances:
    same: np.ndarray  # (p,) float64 distances of same-identity pairs
    different: np.ndarray  # (q,) float64 distances of different-identity pairs
    sampled: bool  # False: every pair; True: the seeded sample described above
    total_pairs: int  # n·(n−1)/2, whether or not all were used
    same_identity: np.ndarray | None = None  # (p,) identity code of each same pair (calibration's bootstrap)
    different_identities: np.ndarray | None = None  # (q, 2) identity codes of each different pair


@dataclass(frozen=True)
class RocCurve:
    thresholds: np.ndarray  # (t,) ascending; the first is −inf (nothing matches)
    tpr: np.ndarray  # (t,) share of same-identity pairs with distance ≤ threshold
    fpr: np.ndarray  # (t,) share of different-identity pairs with distance ≤ threshold
    same_matched: np.ndarray  # (t,) int64 counts behind tpr (exact comparisons for the EER)
    different_matched: np.ndarray  # (t,) int64 counts behind fpr


@dataclass(frozen=True)
class VerificationResult:
    roc_auc: float
    eer: float
    threshold: float  # squared distance at the EER; a pair matches when distance ≤ threshold
    curve: RocCurve
    same_pairs: int
    different_pairs: int
    sampled: bool
    total_pairs: int


def verification_metrics(embeddings, labels, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> VerificationResult:
    pairs = pair_distances(embeddings, labels, max_pairs=max_pairs, seed=seed)
    return verify(pairs)


def verify(pairs: PairDistances) -> VerificationResult:
    nan = float("nan")
    if len(pairs.same) == 0 or len(pairs.different) == 0:
        empty = RocCurve(np.array([-np.inf]), np.zeros(1), np.zeros(1), np.zeros(1, np.int64), np.zeros(1, np.int64))
        return VerificationResult(nan, nan, nan, empty, len(pairs.same), len(pairs.different), pairs.sampled, pairs.total_pairs)
    curve = roc_curve(pairs.same, pairs.different)
    eer, threshold = equal_error_rate(curve)
    return VerificationResult(
        roc_auc=roc_auc(curve), eer=eer, threshold=threshold, curve=curve,
        same_pairs=len(pairs.same), different_pairs=len(pairs.different), sampled=pairs.sampled, total_pairs=pairs.total_pairs,
    )


def roc_curve(same: np.ndarray, different: np.ndarray) -> RocCurve:
    """scikit-learn's ROC curve of same- vs different-identity distances (each class non-empty)."""
    same = np.asarray(same, np.float64).reshape(-1)
    different = np.asarray(different, np.float64).reshape(-1)
    is_same = np.zeros(len(same) + len(different), bool)
    is_same[: len(same)] = True
    score = np.concatenate([same, different])
    np.negative(score, out=score)  # nearer = more alike
    fpr, tpr, thresholds = skm.roc_curve(is_same, score, drop_intermediate=False)
    del is_same, score
    # tpr = matched / positives exactly, so the integer counts the EER compares come back exactly.
    return RocCurve(
        thresholds=-thresholds,  # the first is −inf: nothing matches
        tpr=tpr, fpr=fpr,
        same_matched=np.rint(tpr * len(same)).astype(np.int64),
        different_matched=np.rint(fpr * len(different)).astype(np.int64),
    )


def roc_auc(curve: RocCurve) -> float:
    """Trapezoids between ROC points (ties between the classes count one half): scikit-learn's `auc`."""
    return float(skm.auc(curve.fpr, curve.tpr))


def equal_error_rate(curve: RocCurve) -> tuple[float, float]:
    """(EER, threshold at the EER); see the module docstring for the interpolation."""
    positives, negatives = int(curve.same_matched[-1]), int(curve.different_matched[-1])
    # (FNR − FPR) · positives · negatives, in integers so that "equal" is exact: positive at −inf,
    # negative at the largest distance.
    gap = (positives - curve.same_matched) * negatives - curve.different_matched * positives
    i = int(np.argmax(gap <= 0))  # first point where FNR ≤ FPR
    if gap[i] == 0:  # the rates meet exactly and stay equal until the next threshold
        eer = float(curve.fpr[i])
        upper = curve.thresholds[i + 1] if i + 1 < len(curve.thresholds) else curve.thresholds[i]
        return eer, float((curve.thresholds[i] + upper) / 2.0)
    alpha = float(gap[i - 1]) / float(gap[i - 1] - gap[i])
    eer = float(curve.fpr[i - 1] + alpha * (curve.fpr[i] - curve.fpr[i - 1]))
    if i == 1:  # the crossing lies before the smallest distance: use that distance
        return eer, float(curve.thresholds[1])
    threshold = curve.thresholds[i - 1] + alpha * (curve.thresholds[i] - curve.thresholds[i - 1])
    return eer, float(threshold)


def pair_distances(embeddings, labels, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> PairDistances:
    """Squared distances of all pairs (i < j), or of the seeded sample described above."""
    vectors = np.asarray(embeddings, np.float32)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    codes = codes.reshape(-1)
    n = len(vectors)
    total = n * (n - 1) // 2
    if max_pairs < 2:
        raise ValueError("max_pairs must be at least 2")
    if total <= max_pairs:
        same, different, same_identity, different_identities = _all_pairs(vectors, codes)
        return PairDistances(same, different, False, total, same_identity, different_identities)
    rng = np.random.default_rng(seed)
    half = max_pairs // 2
    first, second = _same_identity_pairs(codes, half, rng)
    same, same_identity = _distances(vectors, first, second), codes[first].astype(np.int32)
    first, second = _different_identity_pairs(codes, half, rng)
    different = _distances(vectors, first, second)
    return PairDistances(same, different, True, total, same_identity, np.stack([codes[first], codes[second]], 1).astype(np.int32))


def _all_pairs(vectors: np.ndarray, codes: np.ndarray):
    """(same, different distances, identity of each same pair, the two identities of each
    different pair). Blocks of rows against the rows after them: memory is one block, never n × n."""
    n = len(vectors)
    same, different, same_identity, different_identities = [], [], [], []
    wide = vectors.astype(np.float64)
    squares = np.einsum("ij,ij->i", wide, wide)
    rows_per_block = max(1, _PAIRS_PER_CHUNK // max(n, 1))
    for start in range(0, n - 1, rows_per_block):
        stop = min(n - 1, start + rows_per_block)
        block = wide[start:stop]
        distances = squares[start:stop, None] + squares[None, :] - 2.0 * block @ wide.T
        np.maximum(distances, 0.0, out=distances)
        rows, columns = np.nonzero(np.arange(n)[None, :] > np.arange(start, stop)[:, None])
        values = distances[rows, columns]
        matches = codes[start + rows] == codes[columns]
        same.append(values[matches])
        different.append(values[~matches])
        same_identity.append(codes[columns[matches]].astype(np.int32))
        different_identities.append(np.stack([codes[start + rows[~matches]], codes[columns[~matches]]], 1).astype(np.int32))
    if not same:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.int32), np.zeros((0, 2), np.int32)
    return np.concatenate(same), np.concatenate(different), np.concatenate(same_identity), np.concatenate(different_identities)


def _same_identity_pairs(codes: np.ndarray, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_identity = counts * (counts - 1) // 2
    if per_identity.sum() <= limit:  # every same-identity pair
        firsts, seconds = [], []
        for code in np.flatnonzero(counts > 1):
            members = order[starts[code] : starts[code] + counts[code]]
            i, j = np.triu_indices(len(members), 1)
            firsts.append(members[i])
            seconds.append(members[j])
        if not firsts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(firsts), np.concatenate(seconds)
    # Uniform over same-identity pairs: an identity in proportion to its pairs, then two members.
    identity = rng.choice(len(counts), size=limit, p=per_identity / per_identity.sum())
    i = rng.integers(0, counts[identity])
    j = rng.integers(0, counts[identity] - 1)
    j = j + (j >= i)
    return order[starts[identity] + i], order[starts[identity] + j]


def _different_identity_pairs(codes: np.ndarray, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform over ordered different-identity pairs: an image in proportion to its negatives,
    then any image outside its identity (positions in label order, skipping its own block)."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    outside = n - counts[codes]
    if outside.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = rng.choice(n, size=limit, p=outside / outside.sum())
    position = rng.integers(0, outside[first])
    own = codes[first]
    position = position + counts[own] * (position >= starts[own])
    return first, order[position]


def _distances(vectors: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    out = np.empty(len(first))
    chunk = max(1, _CHUNK_BYTES // (8 * max(vectors.shape[1], 1)))  # pairs whose float64 differences fit
    for start in range(0, len(first), chunk):
        part = slice(start, start + chunk)
        difference = vectors[first[part]].astype(np.float64) - vectors[second[part]]
        out[part] = np.einsum("ij,ij->i", difference, difference)
    return out
