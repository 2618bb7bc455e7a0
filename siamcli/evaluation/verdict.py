"""Did training help? The trained model against the best baseline, in one line (docs/evaluate.md).

The best baseline is the one with the highest MAP@R of those scored (start model, untrained
backbone, raw pixels). The difference in MAP@R gets a 95 % interval from the bootstrap over
identities, paired: each draw of identities recomputes both models' mean AP@R over the queries
of the drawn identities, and the draw's difference is taken between the two. A seed makes the
interval reproducible. Verdict: helped when the whole interval is above 0, did not help when it
is below, no clear difference when it contains 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from siamcli.evaluation.baselines import BASELINE_ORDER, NAMES, RAW_PIXELS, START_MODEL
from siamcli.evaluation.bootstrap import interval95, resampled_ratios
from siamcli.jsonio import json_float


@dataclass(frozen=True)
class Verdict:
    best_baseline: str  # a baselines name: start_model, untrained_backbone or raw_pixels
    trained_map_at_r: float
    baseline_map_at_r: float
    difference: float  # trained − baseline
    ci95: tuple[float, float]  # of the difference
    identities: int  # identities with queries, the units of the bootstrap
    helped: bool | None  # None: the interval contains 0, or too few identities to tell
    text: str

    def to_json(self) -> dict:
        return {
            "best_baseline": self.best_baseline, "trained_map_at_r": json_float(self.trained_map_at_r),
            "baseline_map_at_r": json_float(self.baseline_map_at_r), "difference": json_float(self.difference),
            "ci95": [json_float(value) for value in self.ci95], "identities": self.identities,
            "helped": self.helped, "text": self.text,
        }


def judge(trained_ap: np.ndarray, baseline_ap: Mapping[str, np.ndarray], labels, seed: int = 0,
          start_model: str | None = None) -> Verdict | None:
    """The verdict from per-image AP@R (nan for images that are not queries), aligned with
    `labels`; `start_model` is the start model's path, for the advice. None without baselines."""
    scored = [name for name in BASELINE_ORDER if name in baseline_ap]
    if not scored:
        return None
    trained_ap = np.asarray(trained_ap, np.float64)
    queries = ~np.isnan(trained_ap)
    best = max(scored, key=lambda name: float(np.mean(baseline_ap[name][queries])))  # ties: the first in order
    difference_ap = trained_ap[queries] - np.asarray(baseline_ap[best], np.float64)[queries]
    _, codes = np.unique(np.asarray(labels)[queries], return_inverse=True)
    sums, counts = np.bincount(codes, weights=difference_ap), np.bincount(codes)
    trained, baseline = float(np.mean(trained_ap[queries])), float(np.mean(baseline_ap[best][queries]))
    difference = trained - baseline
    low, high = interval95(resampled_ratios(sums, counts, seed))
    identities = len(counts)
    helped = None if identities < 2 or low <= 0 <= high else bool(low > 0)
    numbers = (f"MAP@R {trained:.3f} against {baseline:.3f} for {_named(best)} (the best baseline), "
               f"{difference:+.3f} [95 % CI {low:+.3f}, {high:+.3f}] over {identities} identities")
    return Verdict(best, trained, baseline, difference, (low, high), identities, helped,
                   _text(helped, identities, numbers, best, start_model))


def _text(helped: bool | None, identities: int, numbers: str, best: str, start_model: str | None) -> str:
    if identities < 2:
        return f"no clear difference: {numbers}; one identity is too few to tell whether training helped"
    if helped:
        return f"training helped: {numbers}"
    if helped is None:
        return f"no clear difference: {numbers}; training is not shown to help on this data"
    if best == START_MODEL and start_model:
        advice = f"the start model ranks better: index with it (siamcli index GALLERY_DIR --model {start_model} --out INDEX_DIR)"
    else:
        advice = f"use {_named(best)} for this data rather than this model"
    return f"training did not help on this data: {numbers}; {advice}"


def _named(baseline: str) -> str:
    return NAMES[baseline] if baseline == RAW_PIXELS else f"the {NAMES[baseline]}"
