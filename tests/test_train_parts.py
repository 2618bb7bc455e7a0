"""The trainer in small parts (issue 22, item 3): each class one concept with its state set in
its constructor; validation returns its scores; the identity folds train through the public
train step; selection judges with the scores it is given."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

TRAINING = Path(__file__).resolve().parents[1] / "siamcli" / "training"
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 200, 60


def _assigned_self_attributes(function: ast.FunctionDef) -> set[str]:
    names = set()
    for node in ast.walk(function):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name) and part.value.id == "self" \
                        and isinstance(part.ctx, ast.Store):
                    names.add(part.attr)
    return names


def test_every_training_class_is_small_and_sets_its_state_in_its_constructor():
    problems = []
    for path in sorted(TRAINING.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "getattr(self" in source:
            problems.append(f"{path.name}: reads its own state back with getattr(self, ...)")
        for node in ast.walk(ast.parse(source)):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                problems.append(f"{path.name}: class {node.name} is {lines} lines")
            if isinstance(node, ast.FunctionDef) and lines > MAX_FUNCTION_LINES:
                problems.append(f"{path.name}: {node.name} is {lines} lines")
            if isinstance(node, ast.ClassDef):
                methods = [item for item in node.body if isinstance(item, ast.FunctionDef)]
                constructed = set().union(*(_assigned_self_attributes(m) for m in methods if m.name == "__init__"))
                for method in methods:
                    if method.name != "__init__":
                        problems += [f"{path.name}: {node.name}.{method.name} sets self.{name}, which __init__ does not"
                                     for name in sorted(_assigned_self_attributes(method) - constructed)]
    assert problems == []


def _config(**options):
    from siamcli.training import adaptive
    from siamcli.training.config import TrainConfig

    config = TrainConfig(data_dir="d", weights="none", embedding_dim=8, batch_size=8, images_per_identity=2,
                         frozen_epochs=3, **options).resolve()
    return adaptive.adapt(config, train_identities=8, val_identities=2)


def _features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(2 views, 32 images, 24 values) of 8 identities, each near its own centre; labels per image."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(8), 4)
    centres = rng.normal(size=(8, 24))
    clean = centres[labels] + rng.normal(scale=0.8, size=(32, 24))
    return np.stack([clean, clean + rng.normal(scale=0.1, size=clean.shape)]).astype(np.float32), labels


@pytest.mark.train
def test_identity_folds_train_through_the_public_train_step_and_repeat_with_the_seed():
    from siamcli.events import NO_EVENTS
    from siamcli.tf_runtime import import_tensorflow
    from siamcli.training import folds
    from siamcli.training.step import StepPlan

    tf = import_tensorflow()
    import keras

    assert not {"session", "tf", "make_train_step"} & set(inspect.signature(folds.cross_validate).parameters)
    features, labels = _features()
    plan = StepPlan(_config(), tf.distribute.get_strategy(), steps_per_epoch=3, identities_per_batch=4)
    curves = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        curves.append(folds.cross_validate(features, labels, plan, pixel_weight=0.0, pixel_dims=0, events=NO_EVENTS))
    assert curves[0] == curves[1]  # the same seed, the same curve
    assert 2 <= len(curves[0]) <= 4 and all(0.0 <= score <= 1.0 for score in curves[0])
    assert folds.cross_validate(features[:, :12], labels[:12], plan, 0.0, 0, NO_EVENTS) is None  # 3 identities: no two folds


def test_validation_returns_its_scores_with_each_querys_average_precision():
    from siamcli.evaluation.metrics import evaluate_retrieval
    from siamcli.training.validation import Validation

    features, labels = _features()
    vectors = features[0] / np.linalg.norm(features[0], axis=1, keepdims=True)
    validation = Validation(labels, held_out_identities=4)  # identities 4–7: distractors in the gallery only
    scores = validation.score(vectors)
    found = evaluate_retrieval(vectors, labels, ks=(1,))
    queries = labels < 4
    np.testing.assert_allclose(scores.average_precision, found.average_precision[queries])
    assert scores.map_at_r == pytest.approx(found.average_precision[queries].mean()) and scores.measured
    assert not Validation(labels, held_out_identities=0).score(vectors).measured  # no query: NaN


def test_selection_keeps_the_folds_epoch_unless_clearly_worse_than_the_start_and_finds_a_resumed_start():
    from siamcli.training.checkpoint import TrainerState
    from siamcli.training.config import FROZEN
    from siamcli.training.selection import Selection
    from siamcli.training.validation import Scores

    def scores(ap):
        ap = np.asarray(ap, float)
        return Scores(precision_at_1=1.0, map_at_r=float(ap.mean()), average_precision=ap)

    asked = []

    def start_ap():  # a resumed run's start, scored again
        asked.append(1)
        return np.full(6, 0.9)

    fresh = Selection(_config(patience=1), TrainerState())
    assert fresh.keep_start(scores([0.5] * 6)) and fresh.start_kept
    assert fresh.set_fold_curve([0.5, 0.7, 0.6]) == 1 and fresh.planned(FROZEN) == 1
    judged = fresh.judge(1, FROZEN, scores([0.55] * 6), epochs_left=2, start_ap=start_ap)
    assert judged.keep and judged.phase_over and not asked and fresh.best_epoch == 1  # the start's scores were at hand
    resumed = Selection(_config(patience=1), TrainerState(best_epoch=0, best_score=0.9, fold_curve=[0.5, 0.7, 0.6]))
    judged = resumed.judge(1, FROZEN, scores([0.3, 0.35, 0.3, 0.32, 0.31, 0.3]), epochs_left=2, start_ap=start_ap)
    assert asked == [1] and not judged.keep and judged.phase_over and "clearly worse than the start" in judged.warning
    assert resumed.start_kept and resumed.epochs_since_best == 1
    without_folds = Selection(_config(patience=1), TrainerState())
    without_folds.keep_start(scores([0.5] * 6))
    stopped = without_folds.judge(1, FROZEN, scores([0.4] * 6), epochs_left=2, start_ap=start_ap)
    assert not stopped.keep and stopped.phase_over and stopped.early_stop.startswith("early stop of the frozen phase after epoch 1")
