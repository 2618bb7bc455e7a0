"""The bootstrap over identities, behind every 95 % interval `evaluate` reports.

Images (and pairs) of one person are not independent draws, so an interval resamples people:
draw the identities with replacement, keep everything of each drawn identity, recompute the
statistic (the "subsets bootstrap": Bolle, Ratha & Pankanti, 2004). Each statistic here is a
ratio of per-identity sums (errors / pairs; summed AP@R / queries), recomputed for each draw.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 1000


def resampled_ratios(sums: np.ndarray, counts: np.ndarray, seed: int, samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """(samples,) Σ sums / Σ counts over each draw of the identities with counts > 0."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    present = np.flatnonzero(counts > 0)
    draws = np.random.default_rng(seed).choice(present, size=(samples, len(present)), replace=True)
    return sums[draws].sum(axis=1) / np.maximum(counts[draws].sum(axis=1), 1.0)


def interval95(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
