"""A run's match threshold, with where it came from: `<run>/calibration.json`, the one source.

`siamcli evaluate` measures the threshold on identities the model never trained on and writes
it here; `siamcli query`, `siamcli index` (its summary) and `siamcli serve` read it from here,
and only while it belongs to the model they use (same sha256). Nothing copies it elsewhere, so
nothing can go stale. A calibration measured on too few identities is kept, marked unreliable
with the reason, and no command then says "match" or "no match" on its strength.

A pair of images matches when the squared L2 distance of their unit embeddings is at most the
threshold, i.e. when their cosine similarity is at least 1 − threshold / 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from siamcli.atomic import write_json
from siamcli.errors import CorruptArtifactError
from siamcli.jsonio import read_json

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    threshold: float  # squared L2 distance at the operating point; matches when distance ≤ threshold
    operating_point: str  # "eer", or "far" (the largest threshold whose false-match rate ≤ target_far)
    target_far: float | None  # with operating_point "far"
    far: float  # false-match rate at the threshold, on the evaluated pairs
    far_ci95: tuple[float, float]  # bootstrap over identities (2.5 %, 97.5 %)
    frr: float  # false-non-match rate at the threshold
    frr_ci95: tuple[float, float]
    identities: int  # evaluated identities with 2 or more images
    same_pairs: int
    different_pairs: int
    reliable: bool  # enough identities and pairs to act on (see evaluation.calibrate)
    reason: str  # why not, when not reliable ("" otherwise)
    provenance: dict = field(default_factory=dict)  # model_sha256, data, held-out identities, created

    @property
    def similarity(self) -> float:
        """The threshold as a cosine similarity: a pair matches when similarity ≥ this."""
        return similarity_threshold(self.threshold)

    def in_words(self) -> str:
        """What the error rates mean for one comparison: "at this threshold about 1 in 8
        different-identity pairs is called a match and about 1 in 8 same-identity pairs is missed"."""
        false_match = share_in_words(self.far, self.different_pairs, "different-identity pair", "called a match")
        missed = share_in_words(self.frr, self.same_pairs, "same-identity pair", "missed")
        return f"at this threshold {false_match} and {missed}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["far_ci95"], data["frr_ci95"] = list(self.far_ci95), list(self.frr_ci95)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["far_ci95"], known["frr_ci95"] = tuple(known.get("far_ci95", ())), tuple(known.get("frr_ci95", ()))
        return cls(**known)


def share_in_words(rate: float, count: int, noun: str, outcome: str) -> str:
    """A rate as a person reads it: "none of the 1,215 <noun>s is", "about 1 in 8 <noun>s is" (under
    a quarter; two significant digits past 100), "about 32 % of <noun>s are", "every <noun> is"."""
    if rate <= 0:
        return f"none of the {count:,} {noun}s is {outcome}"
    if rate >= 1:
        return f"every {noun} is {outcome}"
    if rate < 0.25:
        one_in = 1 / rate
        one_in = round(one_in) if one_in < 100 else int(float(f"{one_in:.2g}"))
        return f"about 1 in {one_in:,} {noun}s is {outcome}"
    return f"about {round(rate * 100)} % of {noun}s are {outcome}"


def similarity_threshold(distance_threshold: float | None) -> float | None:
    return None if distance_threshold is None else 1.0 - distance_threshold / 2.0


def write_calibration(run_dir: Path, calibration: Calibration) -> Path:
    path = Path(run_dir) / CALIBRATION_FILE
    write_json(path, calibration.to_json())
    return path


def read_calibration(run_dir: Path, model_sha256: str) -> tuple[Calibration | None, str]:
    """(the run's calibration, "") when there is one for this model; else (None, why not)."""
    path = Path(run_dir) / CALIBRATION_FILE
    evaluate = f"`siamcli evaluate --model {run_dir}`"  # the hint names the run: runs/latest may be another
    if not path.is_file():
        return None, f"not calibrated: run {evaluate} on identities the model never trained on"
    try:
        calibration = Calibration.from_json(read_json(path, "calibration"))
    except (CorruptArtifactError, TypeError, ValueError) as exc:
        return None, f"{path} is damaged ({exc}); run {evaluate} again"
    if calibration.provenance.get("model_sha256") != model_sha256:
        return None, f"{path} was measured on another model; run {evaluate} again"
    return calibration, ""
