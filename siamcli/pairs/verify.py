"""`siamcli verify`: are two images the same identity, and how sure?

The similarity of a pair is the cosine similarity of its two embeddings under the run's model:
its light copy (models/light.py: LiteRT, no TensorFlow, the same embeddings) when the run holds
one made from this model.keras, else model.keras with TensorFlow (a note says so).
The decision (match / no match) is similarity ≥ a threshold, which comes from one of:

- the run's calibration (`<run>/calibration.json`, measured by `siamcli evaluate` on identities
  the model never trained on), only while it belongs to this very model (same sha256, checked by
  `calibration.read_calibration`) and is reliable; it brings the false-match and false-non-match
  rates measured at that threshold, with their 95 % intervals;
- `--threshold T` (a cosine similarity) set by the user: no rates, since none were measured at T;
- nothing: no decision (match is None), and `Decision.why_none` says why and how to get one.

A pairs file (CSV with columns `a`, `b` and an optional `same` of 0/1; relative paths resolve
against the CSV's folder) is verified row by row; with `same`, the pairs are also scored as on
LFW: ROC AUC and EER (evaluation.verification's curve, on distances d = 2 − 2·cos) and the
accuracy at the threshold. A row whose image does not decode is skipped and named.

For other callers (the HTTP service, the notebook API) with a model already loaded:

    decision = decision_for(run_dir, model_sha256)          # once, or when calibration.json changes
    verdict = verify_images(model, image_a, image_b, decision)   # paths or (h, w, 3) RGB arrays; model: Keras or LightModel
"""

from __future__ import annotations

import csv
import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from siamcli.calibration import Calibration, read_calibration, similarity_threshold
from siamcli.data.scan import Skipped, describe_skipped
from siamcli.errors import UserError
from siamcli.hashing import file_sha256
from siamcli.rundir import find_run


@dataclass(frozen=True)
class Decision:
    """How a similarity becomes match / no match (threshold None: no decision, `why_none` says why)."""

    threshold: float | None  # cosine similarity: a pair matches when similarity ≥ threshold
    source: str | None = None  # "calibration" (the run's calibration.json) or "option" (--threshold); None without a threshold
    calibration: Calibration | None = None  # with source "calibration": the rates measured there
    why_none: str = ""

    def match(self, similarity: float) -> bool | None:
        return None if self.threshold is None else bool(similarity >= self.threshold)

    def to_json(self) -> dict:
        data: dict = {"threshold": self.threshold, "threshold_source": self.source}
        if self.calibration is not None:
            c = self.calibration
            data.update(far=c.far, far_ci95=list(c.far_ci95), frr=c.frr, frr_ci95=list(c.frr_ci95))
        if self.why_none:
            data["reason"] = self.why_none
        return data


def decision_for(run_dir: Path, model_sha256: str, threshold: float | None = None) -> Decision:
    """`threshold` (a cosine similarity) when given; else the run's reliable calibration for this model."""
    if threshold is not None:
        if not (-1.0 <= threshold <= 1.0):
            raise UserError(f"--threshold {threshold} is not a cosine similarity; give a value from -1 to 1")
        return Decision(float(threshold), "option")
    calibration, why = read_calibration(run_dir, model_sha256)
    run = shlex.quote(str(run_dir))
    if calibration is None:
        # `why` already names the evaluate command that calibrates this run
        return Decision(None, why_none=f"no match decision: {why}, or pass --threshold T (a cosine similarity)")
    if not calibration.reliable:
        return Decision(None, why_none=f"no match decision: the run's threshold is not reliable ({calibration.reason}); "
                                      f"calibrate with `siamcli evaluate DATA_DIR --model {run}` on a folder of more identities "
                                      "the model never trained on, or pass --threshold T (a cosine similarity)")
    return Decision(calibration.similarity, "calibration", calibration)


@dataclass(frozen=True)
class PairVerdict:
    a: str
    b: str
    similarity: float  # cosine similarity, in [-1, 1]
    decision: Decision
    same: bool | None = None  # the pairs file's `same` column, when it has one
    line: int | None = None  # the pairs file's line of this pair

    @property
    def match(self) -> bool | None:
        return self.decision.match(self.similarity)

    def to_json(self) -> dict:
        data = {"a": self.a, "b": self.b, "similarity": self.similarity, "match": self.match, **self.decision.to_json()}
        if self.same is not None:
            data["same"] = self.same
        if self.line is not None:
            data["line"] = self.line
        return data


def cosine_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays (the model's rows are unit already; this says so exactly)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.einsum("ij,ij->i", first, second) / np.maximum(norms, 1e-12)


def _embed(model, images, batch_size: int):
    """models.embed.embed for a Keras model, the light model's own for a LightModel: the same result."""
    from siamcli.models.light import LightModel

    if isinstance(model, LightModel):
        return model.embed(images, batch_size)
    from siamcli.models.embed import embed

    return embed(model, images, batch_size=batch_size)


def embed_images(model, images: Sequence, batch_size: int = 32) -> np.ndarray:
    """(n, d) embeddings of images given as paths or (h, w, 3) RGB arrays, in order; an image
    that does not decode raises UserError naming it. `model`: the Keras model, or the run's LightModel."""
    if all(isinstance(image, (str, os.PathLike)) for image in images):
        embedded = _embed(model, [str(image) for image in images], batch_size)
        if embedded.failures:
            raise UserError(f"cannot read image {embedded.failures[0].path}: {embedded.failures[0].reason}")
        return embedded.vectors
    rows = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            rows.append(embed_images(model, [image], batch_size))
            continue
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise UserError(f"an image array must be (height, width, 3) RGB, got shape {array.shape}")
        rows.append(_embed(model, array[None], 1).vectors)
    return np.concatenate(rows)


def verify_images(model, a, b, decision: Decision, batch_size: int = 32, names: tuple[str, str] | None = None) -> PairVerdict:
    """One pair through `model`: a and b are paths or (h, w, 3) RGB arrays (names: how to call arrays)."""
    vectors = embed_images(model, [a, b], batch_size)
    label_a, label_b = names or (_name(a, "image a"), _name(b, "image b"))
    return PairVerdict(label_a, label_b, float(cosine_similarities(vectors[:1], vectors[1:])[0]), decision)


def _name(image, fallback: str) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else fallback


# ---- pairs files --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRow:
    line: int  # line of the CSV (the header is line 1)
    a: str  # as written in the CSV
    b: str
    same: bool | None
    a_path: str  # resolved against the CSV's folder
    b_path: str


def read_pairs(csv_path: str | os.PathLike) -> tuple[list[PairRow], bool]:
    """(the rows of a pairs CSV, whether it has a `same` column); every malformed line is a UserError naming it."""
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"--pairs {path} {'is not a file' if path.exists() else 'not found'}; give a CSV with columns a,b (and optionally same)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            columns = [name.strip().lower() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            _check_columns(path, columns)
            rows = [_pair_row(path, reader.line_num, raw, "same" in columns) for raw in reader]
    except UnicodeDecodeError as exc:
        raise UserError(f"--pairs {path} is not UTF-8 text ({exc.reason}); give a CSV with columns a,b (and optionally same)") from exc
    except csv.Error as exc:
        raise UserError(f"--pairs {path} is not a valid CSV ({exc}); give columns a,b (and optionally same)") from exc
    if not rows:
        raise UserError(f"--pairs {path} holds no pairs; add one line a,b(,same) per pair under the header")
    return rows, "same" in columns


def _check_columns(path: Path, columns: list[str]) -> None:
    if not columns:
        raise UserError(f"--pairs {path} is empty; give a header line a,b (or a,b,same) and one pair per line")
    if "a" not in columns or "b" not in columns:
        raise UserError(f"--pairs {path} has columns {','.join(columns)}, not a and b; its header line must name a,b (and optionally same)")


def _pair_row(path: Path, line: int, raw: dict, has_same: bool) -> PairRow:
    a, b = (str(raw.get(column) or "").strip() for column in ("a", "b"))
    if not a or not b:
        raise UserError(f"--pairs {path} line {line}: column {'a' if not a else 'b'} is empty; give an image path in both a and b")
    same = None
    if has_same:
        value = str(raw.get("same") or "").strip()
        if value not in ("0", "1"):
            raise UserError(f"--pairs {path} line {line}: same is {value!r}; give 1 (same identity) or 0 (different identities)")
        same = value == "1"
    folder = path.parent
    return PairRow(line, a, b, same, str(folder / a), str(folder / b))


@dataclass(frozen=True)
class PairScores:
    """LFW-style scores of pairs labelled same / different."""

    pairs: int
    same_pairs: int
    different_pairs: int
    roc_auc: float | None  # None without both kinds of pairs
    eer: float | None
    eer_threshold: float | None  # cosine similarity at the equal error rate
    threshold: float | None  # the decision's threshold (cosine similarity)
    accuracy: float | None  # share of pairs decided right at `threshold`; None without one
    false_match_rate: float | None  # at `threshold`, on these pairs
    false_non_match_rate: float | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def score_pairs(similarities: np.ndarray, same: np.ndarray, threshold: float | None) -> PairScores:
    """ROC AUC and EER of the pairs (verification's curve on distances 2 − 2·cos), accuracy and error rates at `threshold`."""
    from siamcli.evaluation.verification import PairDistances, verify  # scikit-learn: seconds to import, so only here

    similarities, same = np.asarray(similarities, np.float64), np.asarray(same, bool)
    distances = np.maximum(2.0 - 2.0 * similarities, 0.0)
    result = verify(PairDistances(same=distances[same], different=distances[~same], sampled=False, total_pairs=len(same)))
    accuracy = far = frr = None
    if threshold is not None:
        matched = similarities >= threshold
        accuracy = float(np.mean(matched == same))
        far = float(np.mean(matched[~same])) if (~same).any() else None
        frr = float(np.mean(~matched[same])) if same.any() else None
    return PairScores(
        pairs=len(same), same_pairs=int(same.sum()), different_pairs=int((~same).sum()),
        roc_auc=_finite(result.roc_auc), eer=_finite(result.eer), eer_threshold=_finite(similarity_threshold(result.threshold)),
        threshold=threshold, accuracy=accuracy, false_match_rate=far, false_non_match_rate=frr,
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ---- the command's engine -----------------------------------------------------------------------
@dataclass
class VerifyOutcome:
    verdicts: list[PairVerdict]
    decision: Decision
    model_path: Path
    scores: PairScores | None = None  # with a pairs file that has a `same` column
    notes: list[str] = field(default_factory=list)  # said on stderr (TensorFlow embeds, no decision, rows skipped)


@dataclass(frozen=True)
class PairModel:
    embedder: object  # the run's LightModel (no TensorFlow) when it was made from this model.keras, else the Keras model
    decision: Decision
    path: Path  # the run's model.keras
    note: str = ""  # why TensorFlow embeds, when it does

    @property
    def notes(self) -> list[str]:
        return [note for note in (self.note, self.decision.why_none) if note]


def open_model(model: str | None, threshold: float | None) -> PairModel:
    """--model's run: its light model if it has one for this model.keras, else model.keras loaded
    with TensorFlow (and a note saying so), with the Decision for its threshold."""
    from siamcli.models.light import open_light_model, tensorflow_note

    run = find_run(model)
    fingerprint = file_sha256(run.model)
    decision = decision_for(run.run_dir, fingerprint, threshold)
    light, why = open_light_model(run.run_dir, fingerprint)
    if light is not None:
        return PairModel(light, decision, run.model)
    from siamcli.models.embedding import load_embedding_model

    return PairModel(load_embedding_model(run.model), decision, run.model, tensorflow_note(why))


def verify_files(a: str, b: str, model: str | None = None, threshold: float | None = None, batch_size: int = 32) -> VerifyOutcome:
    """`siamcli verify A B`: one pair of image files."""
    _check_batch_size(batch_size)
    for image in (a, b):
        _require_image_file(image)
    opened = open_model(model, threshold)
    verdict = verify_images(opened.embedder, a, b, opened.decision, batch_size)
    return VerifyOutcome([verdict], opened.decision, opened.path, notes=opened.notes)


def verify_pairs(csv_path: str, model: str | None = None, threshold: float | None = None, batch_size: int = 32,
                 require_same: bool = False) -> VerifyOutcome:
    """`siamcli verify --pairs PAIRS.csv`: every row; a row whose image does not decode is skipped and named."""
    _check_batch_size(batch_size)
    rows, has_same = read_pairs(csv_path)
    if require_same and not has_same:
        raise UserError(f"--scores-json needs a same column (0/1) in --pairs {csv_path}; add it, or drop --scores-json")
    opened = open_model(model, threshold)
    decision = opened.decision
    vectors, failures = _embed_unique(opened.embedder, [p for row in rows for p in (row.a_path, row.b_path)], batch_size)
    failed = {failure.path for failure in failures}
    kept = [row for row in rows if row.a_path not in failed and row.b_path not in failed]
    dropped = [row.line for row in rows if row.a_path in failed or row.b_path in failed]
    if not kept:
        raise UserError(f"none of the pairs in {csv_path} could be scored; " + describe_skipped(failures))
    similarities = cosine_similarities(np.stack([vectors[row.a_path] for row in kept]), np.stack([vectors[row.b_path] for row in kept]))
    verdicts = [PairVerdict(row.a, row.b, float(s), decision, row.same, row.line) for row, s in zip(kept, similarities)]
    notes = opened.notes
    if failures:
        lines = ", ".join(map(str, dropped))
        notes.append(f"{describe_skipped(failures)}; the pairs on line(s) {lines} of {csv_path} were not scored")
    scores = score_pairs(similarities, np.array([row.same for row in kept]), decision.threshold) if has_same else None
    if scores is not None and scores.roc_auc is None:
        notes.append("ROC AUC and EER need both same (1) and different (0) pairs; the scored pairs hold only one kind")
    return VerifyOutcome(verdicts, decision, opened.path, scores, notes)


def _embed_unique(model, paths: list[str], batch_size: int) -> tuple[dict[str, np.ndarray], list[Skipped]]:
    """Each distinct path embedded once: (path → vector, the paths that did not decode)."""
    unique = list(dict.fromkeys(paths))
    embedded = _embed(model, unique, batch_size)
    return {unique[position]: vector for position, vector in zip(embedded.kept, embedded.vectors)}, embedded.failures


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")


def _require_image_file(image: str) -> None:
    path = Path(image)
    if not path.exists():
        raise UserError(f"image {image} not found; give two image files (or --pairs PAIRS.csv)")
    if not path.is_file():
        raise UserError(f"image {image} is not a file; give two image files (or --pairs PAIRS.csv for many pairs)")
