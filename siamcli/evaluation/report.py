"""`siamcli evaluate` end to end: choose the images → embed → metrics → files.

    <out>/metrics.json      the metrics (docs/evaluate.md's keys), the baselines' retrieval metrics, the calibration,
                            the verdict (did training help: the trained model against the best baseline)
    <out>/report.json       what was evaluated: model, data, counts, pairs, baselines, timings
    <out>/per_class.csv     label, precision, recall, f1, support (label order)
    <out>/confusion.csv     rows true identity, columns predicted identity
    <out>/confusion.png     heatmap;  roc.png  verification ROC;  projection.png  2-D embeddings
    <out>/errors.png        the worst queries beside the wrong nearest neighbour they found
    <out>/embeddings.npy    (n, d) float32, the embeddings scored; labels.csv: path, label, same order

Every file is written atomically; metrics.json, which `siamcli index` reads the match threshold
from, is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siamcli import __version__, rundir
from siamcli.atomic import atomic_path, write_csv, write_json
from siamcli.calibration import CALIBRATION_FILE, Calibration, write_calibration
from siamcli.choices import Projection
from siamcli.data.scan import Skipped, describe_skipped
from siamcli.errors import UserError
from siamcli.evaluation import baselines as base
from siamcli.evaluation import plots
from siamcli.evaluation.calibrate import calibrate
from siamcli.evaluation.classification import ClassificationResult, classify
from siamcli.evaluation.metrics import DEFAULT_BLOCK_SIZE, RetrievalMetrics, RetrievalResult, evaluate_retrieval, exact_distances
from siamcli.evaluation.selection import DataSelection, select_data
from siamcli.evaluation.verdict import Verdict, judge
from siamcli.evaluation.verification import DEFAULT_MAX_PAIRS, VerificationResult, pair_distances, verify
from siamcli.events import NO_EVENTS, Events
from siamcli.jsonio import json_float
from siamcli.run_config import read_config, read_split

EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.json"
METRIC_KEYS = ("precision_at_1", "recall_at_k", "r_precision", "map_at_r", "accuracy", "macro_f1", "roc_auc", "eer", "threshold")


@dataclass(frozen=True)
class EvaluateOptions:
    ks: tuple[int, ...] = (1, 5, 10)  # recall@k
    batch_size: int = 32  # images per forward pass
    baselines: bool = True  # also score the start model, raw pixels and the untrained backbone, and give the verdict
    max_pairs: int = DEFAULT_MAX_PAIRS  # verification: all pairs up to this many, else a seeded sample
    seed: int = 0  # pair sample, bootstraps (threshold, verdict) and projection
    projection: str = "auto"  # auto | pca | tsne
    normalize_confusion: bool = False  # heatmap of row shares instead of counts
    error_cases: int = 8  # rows of errors.png
    block_size: int = DEFAULT_BLOCK_SIZE  # queries per FAISS search
    target_far: float | None = None  # operating point of the match threshold: this false-match rate, else the EER

    def validate(self) -> "EvaluateOptions":
        if not self.ks:
            raise UserError("--k needs at least one value")
        bad = [k for k in self.ks if k < 1]
        if bad:
            raise UserError(f"--k values must be 1 or more, got {bad[0]}")
        checks = [
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.max_pairs >= 2, f"--max-pairs must be at least 2, got {self.max_pairs}"),
            (self.error_cases >= 1, f"error cases must be at least 1, got {self.error_cases}"),
            (self.block_size >= 1, f"block size must be at least 1, got {self.block_size}"),
            (self.target_far is None or 0 < self.target_far < 1, f"--target-far must be between 0 and 1 (exclusive), got {self.target_far}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        Projection.check(self.projection, "--projection")
        return self


@dataclass
class EvaluationReport:
    out_dir: Path
    run_dir: Path
    model: Path
    data: DataSelection
    image_size: int
    paths: list[str]  # the images scored, in embedding order
    labels: list[str]
    embeddings: np.ndarray  # (n, d) float32
    retrieval: RetrievalResult
    classification: ClassificationResult
    verification: VerificationResult
    calibration: Calibration | None  # None when there are no pairs of both kinds
    ks: tuple[int, ...]
    baselines: dict[str, RetrievalMetrics] = field(default_factory=dict)
    baseline_ap: dict[str, np.ndarray] = field(default_factory=dict)  # name → (n,) AP@R, nan for non-queries
    baseline_descriptions: dict[str, str] = field(default_factory=dict)
    baselines_skipped: dict[str, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    projection: str = ""
    files: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    model_sha256: str = ""
    max_pairs: int = DEFAULT_MAX_PAIRS
    seed: int = 0
    verdict: Verdict | None = None  # None without baselines

    @property
    def metrics(self) -> RetrievalMetrics:
        return self.retrieval.metrics

    def metrics_json(self) -> dict:
        """metrics.json and `--json`: the nine metric keys (docs/evaluate.md), then "baselines" (name →
        retrieval keys), "calibration", "verdict"."""
        document = self.metrics.to_json()
        document.update({
            "accuracy": json_float(self.classification.accuracy),
            "macro_f1": json_float(self.classification.macro_f1),
            "roc_auc": json_float(self.verification.roc_auc),
            "eer": json_float(self.verification.eer),
            "threshold": json_float(self.verification.threshold),
        })
        document = {key: document[key] for key in METRIC_KEYS}
        document["baselines"] = {name: self.baselines[name].to_json() for name in base.BASELINE_ORDER if name in self.baselines}
        document["calibration"] = None if self.calibration is None else self._calibration_json()
        document["verdict"] = None if self.verdict is None else self.verdict.to_json()
        return document

    def _calibration_json(self) -> dict:
        data = self.calibration.to_json()
        data.pop("provenance")
        return {key: json_float(value) if isinstance(value, float) else value for key, value in data.items()}

    def report_json(self) -> dict:
        counts = pd.Series(self.labels).value_counts()
        return {
            "siamcli_version": __version__,
            "model": str(self.model),
            "model_sha256": self.model_sha256,
            "run_dir": str(self.run_dir),
            "data_dir": self.data.root,
            "data": self.data.source,
            "held_out_identities": self.data.held_out,
            "image_size": self.image_size,
            "embedding_dim": int(self.embeddings.shape[1]),
            "images": len(self.labels),
            "identities": int(len(counts)),
            "single_image_identities": int((counts == 1).sum()),
            "queries": self.metrics.queries,
            "ks": list(self.ks),
            "distance": "squared Euclidean between the embeddings (unit vectors: 2 - 2 cos)",
            "ties": "equal distances rank the earlier image (labels.csv order) first",
            "verification": {
                "same_identity_pairs": self.verification.same_pairs,
                "different_identity_pairs": self.verification.different_pairs,
                "all_pairs": self.verification.total_pairs,
                "sampled": self.verification.sampled,
                "max_pairs": self.max_pairs,
                "seed": self.seed,
                "match_rule": "distance <= threshold",
            },
            "baselines": dict(self.baseline_descriptions),
            "baselines_skipped": dict(self.baselines_skipped),
            "projection": self.projection,
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
            "seconds": {key: round(value, 3) for key, value in self.seconds.items()},
            "files": list(self.files),
        }


def default_out_dir(run_dir: Path, data_dir: str | None) -> Path:
    """<run>/eval for the held-out identities; <run>/eval-<folder> for a DATA_DIR, so evaluating
    another folder never overwrites the held-out report."""
    return run_dir / (EVAL_DIR if data_dir is None else f"{EVAL_DIR}-{Path(data_dir).resolve().name}")


def evaluate(
    model: str | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    options: EvaluateOptions | None = None,
    events: Events | None = None,
) -> EvaluationReport:
    """Score `model` (a run, its model.keras; None: runs/latest) on DATA_DIR or its held-out identities
    and write the files above to `out`: choose → embed → score → baselines → write."""
    events = events or NO_EVENTS
    options = (options or EvaluateOptions()).validate()
    started = time.perf_counter()
    run = rundir.find_run(model)
    out_dir = _out_dir(run, data_dir, out)
    selection, warnings = _choose(run, data_dir)
    scored = _embed(run, selection, data_dir, options, events, warnings)
    seconds = {"embedding": time.perf_counter() - started}
    tick = time.perf_counter()
    report = _score(scored, run, out_dir, selection, options, events)
    seconds["metrics"] = time.perf_counter() - tick
    if options.baselines:
        tick = time.perf_counter()
        _score_baselines(report, run, options, events)
        seconds["baselines"] = time.perf_counter() - tick
    for text in report.warnings:
        events.message(text)
    _write_everything(report, run, options, events, seconds, started)
    return report


@dataclass
class _Scored:
    """What embedding the selection left: the model's facts and the images that decoded, in order."""
    loaded: object  # run_model.LoadedRunModel
    paths: list[str]
    labels: list[str]
    embeddings: np.ndarray
    skipped: list[Skipped]
    trained_on: list[str]
    warnings: list[str]


def _out_dir(run: rundir.RunPaths, data_dir: str | None, out: str | None) -> Path:
    out_dir = Path(out) if out else default_out_dir(run.run_dir, data_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the evaluation")
    return out_dir


def _choose(run: rundir.RunPaths, data_dir: str | None) -> tuple[DataSelection, list[str]]:
    """The images to score (select_data), with a warning for held-out identities that have none."""
    selection = select_data(run, data_dir)
    warnings: list[str] = []
    if selection.held_out:
        wanted = set(read_split(run.split).val)
        missing = sorted(wanted - {item.label for item in selection.items})
        if missing:
            warnings.append(f"{len(missing)} held-out identit{'y has' if len(missing) == 1 else 'ies have'} no images in "
                            f"{selection.root}: {', '.join(missing[:10])}")
    _check_enough([item.label for item in selection.items], selection.root)
    return selection, warnings


def _embed(run: rundir.RunPaths, selection: DataSelection, data_dir: str | None, options: EvaluateOptions,
           events: Events, warnings: list[str]) -> _Scored:
    """Load the run's model and embed the selection; images that fail are skipped, with a warning."""
    from siamcli.models.embed import embed
    from siamcli.models.run_model import load_run_model

    loaded = load_run_model(run)
    paths = [item.path for item in selection.items]
    events.stage("embedding images", len(paths))
    embedded = embed(loaded.model, paths, batch_size=options.batch_size, on_progress=events.advance)
    skipped = list(selection.skipped) + list(embedded.failures)
    if skipped:
        warnings.append(describe_skipped(skipped))
    kept_items = [selection.items[i] for i in embedded.kept]
    labels = [item.label for item in kept_items]
    _check_enough(labels, selection.root)
    trained_on = _trained_identities(run, data_dir, labels)
    warnings.extend(_identity_warnings(trained_on, labels))
    return _Scored(loaded, [item.path for item in kept_items], labels, np.asarray(embedded.vectors, np.float32),
                   skipped, trained_on, warnings)


def _identity_warnings(trained_on: list[str], labels: list[str]) -> list[str]:
    """What makes the scores less than they seem: identities trained on, identities of one image."""
    warnings = []
    if trained_on:
        warnings.append(
            f"{len(trained_on)} of the evaluated identities were trained on (split.json 'train'), e.g. {trained_on[0]}: "
            "scores on them are closed-set and higher than on unseen identities"
        )
    singles = sorted(name for name, count in pd.Series(labels).value_counts().items() if count == 1)
    if singles:
        warnings.append(
            f"{len(singles)} identit{'y has' if len(singles) == 1 else 'ies have'} a single image: not queries, "
            f"only gallery: {', '.join(singles[:10])}{' …' if len(singles) > 10 else ''}"
        )
    return warnings


def _score(scored: _Scored, run: rundir.RunPaths, out_dir: Path, selection: DataSelection, options: EvaluateOptions,
           events: Events) -> EvaluationReport:
    """Retrieval, classification (nearest neighbour), verification and the calibration of the embeddings."""
    ks = tuple(sorted(set(options.ks)))
    embeddings, labels, warnings = scored.embeddings, scored.labels, scored.warnings
    events.stage("retrieval metrics")
    retrieval = evaluate_retrieval(embeddings, labels, ks, block_size=options.block_size)
    queries = np.flatnonzero(retrieval.is_query)
    label_array = np.asarray(labels)
    classification = classify(label_array[queries], label_array[retrieval.nearest[queries]])
    model_sha256 = scored.loaded.sha256  # the calibration's provenance and report.json
    events.stage("verification pairs")
    pairs = pair_distances(embeddings, labels, max_pairs=options.max_pairs, seed=options.seed)
    verification = verify(pairs)
    calibration = None
    if verification.roc_auc != verification.roc_auc:
        warnings.append("verification needs both same- and different-identity pairs: roc_auc, eer and threshold are null")
    else:
        calibration = calibrate(pairs, verification, options.target_far, options.seed, {
            "model_sha256": model_sha256, "data": selection.source, "identities": sorted(set(labels)),
            "trained_on": scored.trained_on, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
    del pairs
    return EvaluationReport(
        out_dir=out_dir, run_dir=run.run_dir, model=run.model, data=selection, image_size=scored.loaded.image_size,
        paths=scored.paths, labels=labels, embeddings=embeddings, retrieval=retrieval, classification=classification,
        verification=verification, calibration=calibration, ks=ks, skipped=scored.skipped, warnings=warnings,
        max_pairs=options.max_pairs, seed=options.seed, model_sha256=model_sha256,
    )


def _write_everything(report: EvaluationReport, run: rundir.RunPaths, options: EvaluateOptions, events: Events,
                      seconds: dict[str, float], started: float) -> None:
    """The files, report.json, metrics.json last (it says the report is complete), then the run's calibration."""
    events.stage("writing files")
    tick = time.perf_counter()
    _write_files(report, options)
    seconds["files"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    report.seconds = seconds
    write_json(report.out_dir / REPORT_FILE, report.report_json())
    write_json(report.out_dir / METRICS_FILE, report.metrics_json())  # last: it says the report is complete
    _keep_calibration(report, run, events)


def _keep_calibration(report: EvaluationReport, run: rundir.RunPaths, events: Events) -> None:
    """Write <run>/calibration.json, the threshold every command reads, from a held-out evaluation
    only: identities the model trained on would make any threshold look better than it is."""
    calibration = report.calibration
    if calibration is None:
        return
    if calibration.provenance.get("trained_on"):
        events.message(f"{run.run_dir / CALIBRATION_FILE} left as it was: the evaluated identities include ones the model trained on")
        return
    write_calibration(run.run_dir, calibration)
    if not calibration.reliable:
        events.message(f"match threshold not reliable: {calibration.reason}; queries will show no match column")


def error_cases(report: EvaluationReport, limit: int) -> list[plots.ErrorCase]:
    """Queries whose nearest image is of another identity, worst first: lowest AP@R, then the
    most confident mistake (smallest distance), then position. Each comes with the nearest image
    of its own identity and that image's rank (ties ranked as in the metrics)."""
    retrieval = report.retrieval
    labels = np.asarray(report.labels)
    vectors = report.embeddings
    queries = np.flatnonzero(retrieval.is_query)
    wrong = queries[labels[retrieval.nearest[queries]] != labels[queries]]
    order = np.lexsort((wrong, retrieval.nearest_distance[wrong], retrieval.average_precision[wrong]))
    cases = []
    for i in wrong[order][:limit]:
        neighbour = int(retrieval.nearest[i])
        distances = exact_distances(vectors, np.array([i]), np.arange(len(vectors))[None, :])[0]  # (n,): never n × n
        same = np.flatnonzero(labels == labels[i])
        same = same[same != i]
        right = int(same[np.lexsort((same, distances[same]))[0]])
        others = np.arange(len(labels)) != i
        rank = 1 + int(np.sum(others & ((distances < distances[right]) | ((distances == distances[right]) & (np.arange(len(labels)) < right)))))
        cases.append(plots.ErrorCase(
            query_path=report.paths[i], query_label=report.labels[i],
            neighbour_path=report.paths[neighbour], neighbour_label=report.labels[neighbour],
            distance=float(retrieval.nearest_distance[i]),
            correct_path=report.paths[right], correct_distance=float(distances[right]), correct_rank=rank,
        ))
    return cases


def _score_baselines(report: EvaluationReport, run: rundir.RunPaths, options: EvaluateOptions, events: Events) -> None:
    """Each baseline scored as the trained model is, then the verdict against the best of them."""
    features, descriptions, skipped = _baseline_features(report, run, options, events)
    for name in base.BASELINE_ORDER:
        if name not in features:
            continue
        try:
            result = evaluate_retrieval(features[name], report.labels, report.ks, block_size=options.block_size)
        except ValueError as exc:  # e.g. a random backbone whose features overflowed
            skipped[name] = str(exc)
            descriptions.pop(name, None)
            continue
        report.baselines[name], report.baseline_ap[name] = result.metrics, result.average_precision
    report.baseline_descriptions, report.baselines_skipped = descriptions, skipped
    for name, reason in skipped.items():
        report.warnings.append(f"start model {reason}: {run.start_model} is missing, so it has no column"
                               if reason == base.START_NOT_RECORDED else f"baseline {base.NAMES[name]} skipped: {reason}")
    report.verdict = judge(report.retrieval.average_precision, report.baseline_ap, report.labels, options.seed, str(run.start_model))


def _baseline_features(report: EvaluationReport, run: rundir.RunPaths, options: EvaluateOptions,
                       events: Events) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """(name → features, name → what was scored, name → why skipped) of every baseline."""
    try:
        config = read_config(run.config)
    except UserError:
        config = {"weights": "none", "seed": 0}
        report.warnings.append(f"{run.config} is missing: the untrained-backbone baseline uses random weights, seed 0")
    events.stage("baselines: raw pixels, untrained backbone", len(report.paths))
    found = base.baseline_features(report.paths, report.image_size, config, batch_size=options.batch_size, on_progress=events.advance)
    features, descriptions, skipped = dict(found.features), dict(found.descriptions), dict(found.skipped)
    if run.start_model.resolve() == run.model.resolve():
        skipped[base.START_MODEL] = "it is the model evaluated"
        return features, descriptions, skipped
    if run.start_model.is_file():
        events.stage("baselines: start model", len(report.paths))
    vectors, text = base.start_model_features(run.start_model, report.paths, options.batch_size, events.advance)
    if vectors is None:
        skipped[base.START_MODEL] = text
    else:
        features[base.START_MODEL], descriptions[base.START_MODEL] = vectors, text
    return features, descriptions, skipped


def _write_files(report: EvaluationReport, options: EvaluateOptions) -> None:
    out = report.out_dir
    files = []
    with atomic_path(out / "embeddings.npy", suffix=".npy") as tmp:
        np.save(tmp, report.embeddings)
    files.append("embeddings.npy")
    write_csv(out / "labels.csv", pd.DataFrame({"path": report.paths, "label": report.labels}))
    files.append("labels.csv")
    write_csv(out / "per_class.csv", report.classification.per_class)
    files.append("per_class.csv")
    write_csv(out / "confusion.csv", report.classification.confusion_frame())
    files.append("confusion.csv")
    plots.confusion_heatmap(report.classification, out / "confusion.png", normalize=options.normalize_confusion)
    files.append("confusion.png")
    plots.roc_plot(report.verification, out / "roc.png")
    files.append("roc.png")
    report.projection = plots.projection_plot(report.embeddings, report.labels, out / "projection.png", options.projection, options.seed)
    files.append("projection.png")
    plots.errors_plot(error_cases(report, options.error_cases), out / "errors.png")
    files.append("errors.png")
    report.files = files + [REPORT_FILE, METRICS_FILE]


def _trained_identities(run: rundir.RunPaths, data_dir: str | None, labels: list[str]) -> list[str]:
    """Identities of DATA_DIR named like ones the run trained on (split.json "train"), wherever
    DATA_DIR is: a copy of the training folder is still the training data."""
    if data_dir is None:
        return []
    try:
        trained = read_split(run.split).train
    except (UserError, OSError):
        return []
    return sorted(set(trained) & set(labels))


def _check_enough(labels: list[str], root: str) -> None:
    counts = pd.Series(labels, dtype=object).value_counts()
    if len(counts) < 2 or (counts >= 2).sum() == 0:
        raise UserError(
            f"{root}: {len(labels)} readable image(s) in {len(counts)} identit{'y' if len(counts) == 1 else 'ies'}; "
            "evaluation needs at least 2 identities and one identity with 2 or more images"
        )
