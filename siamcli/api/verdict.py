"""`Run.verify`'s answer: the engine's verdict on one pair (pairs/verify.py), as plain fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from siamcli.api.names import keywords, translate
from siamcli.pairs.verify import PairVerdict


@dataclass(frozen=True)
class Verdict:
    """Whether two images show the same identity, and how sure.

    `match` is similarity ≥ threshold, None without a threshold (`reason` says why and how to get
    one). With the run's calibrated threshold (`threshold_source` "calibration") come the
    false-match and false-non-match rates measured there, with their 95 % intervals; a threshold
    given to `verify` ("option") has none, since none were measured at it.
    """

    a: str  # image a: its path, or "image a" for an in-memory image
    b: str
    similarity: float  # cosine similarity of the two embeddings, in [-1, 1]
    match: bool | None
    threshold: float | None  # a cosine similarity
    threshold_source: str | None  # "calibration" (the run's calibration.json) or "option" (verify's threshold=)
    far: float | None = None  # false-match rate at the calibrated threshold
    far_ci95: tuple[float, float] | None = None
    frr: float | None = None  # false-non-match rate at the calibrated threshold
    frr_ci95: tuple[float, float] | None = None
    reason: str = ""  # without a threshold: why, and how to get one
    verdict: PairVerdict = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @classmethod
    def of(cls, verdict: PairVerdict) -> "Verdict":
        decision, calibration = verdict.decision, verdict.decision.calibration
        rates = {} if calibration is None else dict(far=calibration.far, far_ci95=tuple(calibration.far_ci95),
                                                    frr=calibration.frr, frr_ci95=tuple(calibration.frr_ci95))
        reason = translate(decision.why_none, keywords(None, frozenset(), {"threshold": "threshold"}))  # threshold=T, not --threshold T
        return cls(a=verdict.a, b=verdict.b, similarity=verdict.similarity, match=verdict.match, threshold=decision.threshold,
                   threshold_source=decision.source, reason=reason, verdict=verdict, **rates)

    def to_json(self) -> dict:
        """What `siamcli verify A B --json` prints for this pair."""
        return self.verdict.to_json()
