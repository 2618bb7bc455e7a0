"""Choosing the match threshold and saying how far to trust it.

Operating point: the equal error rate by default, or the largest threshold whose false-match
rate (FAR) on the evaluated different-identity pairs is at most `target_far`.

Uncertainty: pairs of the same people are not independent draws, so the 95 % intervals come
from the bootstrap over identities (evaluation.bootstrap: every pair of each drawn identity
kept). An identity's false matches are those of the pairs it takes part in.

Reliability, stated and checked: at least MIN_IDENTITIES identities with two or more images and
MIN_SAME_PAIRS same-identity pairs, and enough different-identity pairs to measure the target
FAR at all (1 / pairs ≤ target). Fewer, and the threshold is reported as unreliable with the
reason: `siamcli query` then shows no match column rather than a confident wrong one.
"""

from __future__ import annotations

import numpy as np

from siamcli.calibration import Calibration
from siamcli.evaluation.bootstrap import interval95, resampled_ratios
from siamcli.evaluation.verification import PairDistances, VerificationResult

MIN_IDENTITIES = 10  # people behind the different-identity pairs: fewer, and FAR is a guess
MIN_SAME_PAIRS = 100


def calibrate(pairs: PairDistances, verification: VerificationResult, target_far: float | None = None,
              seed: int = 0, provenance: dict | None = None) -> Calibration:
    """The operating threshold, its FAR/FRR with 95 % intervals, and whether to rely on it."""
    same, different = np.asarray(pairs.same), np.asarray(pairs.different)
    identities = len(np.unique(pairs.same_identity)) if pairs.same_identity is not None else 0
    if target_far is None:
        threshold, point = float(verification.threshold), "eer"
    else:
        threshold, point = _threshold_for_far(different, target_far), "far"
    far, far_ci = _rate_with_interval(different <= threshold, pairs.different_identities, seed)
    frr, frr_ci = _rate_with_interval(same > threshold, pairs.same_identity, seed + 1)
    reason = _unreliable_because(identities, len(same), len(different), target_far)
    return Calibration(
        threshold=threshold, operating_point=point, target_far=target_far, far=far, far_ci95=far_ci,
        frr=frr, frr_ci95=frr_ci, identities=identities, same_pairs=len(same), different_pairs=len(different),
        reliable=not reason, reason=reason, provenance=dict(provenance or {}),
    )


def _threshold_for_far(different: np.ndarray, target_far: float) -> float:
    """The largest distance threshold with at most target_far·q of the q different pairs at or below it."""
    ordered = np.sort(different)
    allowed = int(np.floor(target_far * len(ordered) + 1e-9))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], -np.inf))  # just below the first pair it must not match


def _rate_with_interval(errors: np.ndarray, identities: np.ndarray | None, seed: int) -> tuple[float, tuple[float, float]]:
    """Share of `errors` and its 95 % interval from resampling the identities behind the pairs."""
    if len(errors) == 0:
        return float("nan"), (float("nan"), float("nan"))
    rate = float(np.mean(errors))
    if identities is None:
        return rate, (rate, rate)
    sides = identities.reshape(len(errors), -1)  # one column (same pairs) or two (different pairs)
    count = int(sides.max()) + 1
    # Per identity: pairs it takes part in, and errors among them (a pair counts for both its people).
    pairs = sum(np.bincount(sides[:, c], minlength=count) for c in range(sides.shape[1])).astype(np.float64)
    wrong = sum(np.bincount(sides[:, c], weights=errors.astype(np.float64), minlength=count) for c in range(sides.shape[1]))
    return rate, interval95(resampled_ratios(wrong, pairs, seed))


def _unreliable_because(identities: int, same_pairs: int, different_pairs: int, target_far: float | None) -> str:
    if identities < MIN_IDENTITIES:
        return f"measured on {identities} identities; a threshold needs at least {MIN_IDENTITIES} with 2 or more images each"
    if same_pairs < MIN_SAME_PAIRS:
        return f"measured on {same_pairs} same-identity pairs; a threshold needs at least {MIN_SAME_PAIRS}"
    if target_far is not None and target_far * different_pairs < 1:
        return f"a false-match rate of {target_far:g} cannot be measured on {different_pairs} different-identity pairs"
    return ""
