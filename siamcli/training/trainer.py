"""The two-phase trainer.

Phase "frozen": the backbone is frozen and nothing random acts before it, so every image's
backbone features are computed once and the head trains on those cached features (an epoch
then costs a few matrix products instead of a ResNet50 pass per image).
Phase "finetune": the backbone trains from `finetune_from` on, on augmented images.

Both phases draw P×K batches, embed each image once, mine triplets inside the batch, and run
under a tf.distribute strategy (the global batch is split across replicas). Before the first
step the start model (training/start_model.py) is written to `start.keras` and scored on the
validation set as epoch 0; after every epoch the held-out identities are embedded and scored,
and `model.keras` holds the epoch model selection keeps (start_model.py says the rule: the best
on validation, the start included, except that with identity folds the frozen epoch they chose
is kept unless clearly worse than the start, so it may score below it); a checkpoint of the
epoch lets `resume` continue from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siamcli import __version__, rundir
from siamcli.atomic import atomic_path, write_csv
from siamcli.data.pipeline import PKSampler, augment_images, pk_batches
from siamcli.data.scan import Skipped, check_identity_layout, describe_skipped, scan_folder
from siamcli.data.split import IdentitySplit, split_identities
from siamcli.errors import Interrupted, UserError
from siamcli.evaluation.metrics import evaluate_retrieval
from siamcli.events import NO_EVENTS, Events
from siamcli.faults import crash_point
from siamcli.models.backbone_weights import WeightsChoice, resolve_weights
from siamcli.run_config import RunConfig, RunSelection, RunSplit, read_config, read_split, write_config, write_split
from siamcli.tf_runtime import import_tensorflow
from siamcli.training import adaptive, checkpoint, folds, start_model, tensorboard
from siamcli.training.config import COSINE_FLOOR, MIN_STEPS_PER_EPOCH, TrainConfig
from siamcli.training.plots import plot_history
from siamcli.training.strategy import choose_strategy, is_chief, worker_count

tf = import_tensorflow()
import keras  # noqa: E402

from siamcli.models import embedding as nets  # noqa: E402
from siamcli.models.embed import embed, load_pixels  # noqa: E402
from siamcli.models.triplet_loss import triplet_loss  # noqa: E402

FROZEN, FINETUNE = "frozen", "finetune"
PHASES = (FROZEN, FINETUNE)
HISTORY_COLUMNS = [
    "epoch", "phase", "loss", "precision_at_1", "map_at_r", "active_fraction",
    "positive_distance", "negative_distance", "distance_gap", "images_per_second", "seconds", "lr", "collapsed",
]


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    history: pd.DataFrame
    split: IdentitySplit
    train_images: int
    val_images: int
    skipped: list[Skipped]
    best_epoch: int | None
    best_metrics: dict = field(default_factory=dict)
    images_per_second: dict = field(default_factory=dict)  # phase → steady-state mean
    warnings: list[str] = field(default_factory=list)
    start_metrics: dict = field(default_factory=dict)  # the start model's validation scores ("epoch 0")
    selection: str | None = None  # one line: the kept model against the start, on validation
    validation: dict = field(default_factory=dict)  # what the validation set holds
    pixel_weight: float = 0.0  # the start model's share of pixels, and what chose it
    pixel_weight_chosen_by: str = ""

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.run_dir / rundir.MODEL_FILE),
            "start_model": str(self.run_dir / rundir.START_MODEL_FILE),
            "train_identities": len(self.split.train),
            "val_identities": len(self.split.val),
            "train_images": self.train_images,
            "val_images": self.val_images,
            "skipped_files": len(self.skipped),
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best": self.best_metrics,
            "images_per_second": self.images_per_second,
            "warnings": self.warnings,
            "start": self.start_metrics,
            "selection": self.selection,
            "validation": self.validation,
            "pixel_weight": self.pixel_weight,
            "pixel_weight_chosen_by": self.pixel_weight_chosen_by,
        }


@dataclass
class _Data:
    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) int32 identity index
    names: list[str]  # identity names, indexed by label


def library_versions() -> dict:
    import faiss

    return {
        "siamcli": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def train(config: TrainConfig, out: str | None = None, force: bool = False, events: Events | None = None) -> TrainResult:
    """Start a new run in `out` (default runs/<timestamp>)."""
    events = events or NO_EVENTS
    config = config.validate().resolve()
    weights = resolve_weights(config.weights)  # fail fast, before any slow work
    scan = scan_folder(config.data_dir, labelled=True)
    check_identity_layout(scan)
    split = split_identities(scan.counts(), config.val_fraction, config.seed)
    if is_chief(config.strategy):
        run_dir = rundir.new_run_dir(out, force)
    else:  # another worker of a multi-worker run: same work, artifacts thrown away
        run_dir = _worker_scratch_dir()
    return _run(config, weights, scan, split, run_dir, events, resume_from=None)


def resume(run: str | Path, events: Events | None = None) -> TrainResult:
    """Continue `run` from its last complete epoch, with its own options and split."""
    events = events or NO_EVENTS
    run_dir = Path(run)
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise UserError(f"{run_dir} is not a siamcli run (no {rundir.CONFIG_FILE}); give the run directory to --resume")
    recorded = read_config(run_dir / rundir.CONFIG_FILE)
    config = TrainConfig.from_json(recorded.options).validate()
    stored = read_split(run_dir / rundir.SPLIT_FILE)
    split = IdentitySplit(train=stored.train, val=stored.val)
    saved = checkpoint.latest(run_dir / rundir.CHECKPOINTS)
    state = checkpoint.load_state(saved)
    if not any(_epochs_left(config, state, phase) for phase in PHASES):
        raise UserError(f"{run_dir} already finished all its epochs; nothing to resume")
    # The checkpoint holds every weight: the backbone's starting point no longer matters.
    data_dir = recorded.find_data(run_dir)
    if data_dir is None:
        raise UserError(f"the run's data folder {config.data_dir} is not there; restore it to resume")
    config = dataclasses.replace(config, data_dir=str(data_dir))
    scan = scan_folder(config.data_dir, labelled=True)
    missing = sorted(set(split.train) - set(scan.counts()))
    if missing:
        raise UserError(f"{config.data_dir} no longer holds identities the run trained on ({', '.join(missing[:5])}); restore the data to resume")
    events.stage(f"resuming from epoch {state.epoch}")
    events.result(f"the last complete one ({saved})")
    if not is_chief(config.strategy):  # another worker: read the chief's checkpoint, write elsewhere
        run_dir = _worker_scratch_dir()
    return _run(config, WeightsChoice("none", None), scan, split, run_dir, events, resume_from=saved)


def _how_to_continue(run_dir: Path) -> str:
    """What an interrupted run tells its user: the exact command that continues it, if any can."""
    try:
        checkpoint.latest(run_dir / rundir.CHECKPOINTS)
    except UserError:
        return f"interrupted before the first epoch was complete: nothing to resume; start again with --out {run_dir} --force"
    return f"interrupted; every complete epoch is saved: continue with `siamcli train --resume {run_dir}`"


def _worker_scratch_dir() -> Path:
    import tempfile

    return rundir.new_run_dir(tempfile.mkdtemp(prefix="siamcli-worker-"), force=True)


def _run(config, weights, scan, split, run_dir, events, resume_from) -> TrainResult:
    previous_policy = keras.mixed_precision.dtype_policy()
    try:
        return _run_with_policy(config, weights, scan, split, run_dir, events, resume_from)
    except KeyboardInterrupt as exc:
        raise Interrupted(_how_to_continue(run_dir)) from exc
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)  # a library must not leak global state


def _run_with_policy(config, weights, scan, split, run_dir, events, resume_from) -> TrainResult:
    warnings: list[str] = []
    singles = sorted(name for name, count in scan.counts().items() if count == 1 and name in split.train)
    if singles:
        warnings.append(
            f"{len(singles)} identit{'y has' if len(singles) == 1 else 'ies have'} a single image and can only serve as "
            f"negatives: {', '.join(singles[:10])}{' …' if len(singles) > 10 else ''}"
        )
    if not split.val:
        warnings.append("too few identities to hold any out: no validation metrics, model.keras is the last epoch")

    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else.
    strategy = choose_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    config = adaptive.adapt(config, len(split.train), len(split.val))  # what config.json records
    train_data, val_data, skipped, val_images = _load(scan, split, config, events)
    if len(np.unique(train_data.labels[np.bincount(train_data.labels)[train_data.labels] >= 2])) < 2:
        raise UserError("fewer than 2 training identities have 2 or more readable images; add images")
    for text in warnings:
        events.message(text)

    keras.mixed_precision.set_dtype_policy(config.precision)
    keras.utils.set_random_seed(config.seed)
    if resume_from is None:
        write_config(run_dir / rundir.CONFIG_FILE, RunConfig(
            options=config.to_json(),
            data_dir_from_run=os.path.relpath(config.data_dir, run_dir.resolve()),
            replicas=replicas,
            workers=worker_count(config.strategy),
            strategy_class=type(strategy).__name__,
            classes={"train": len(split.train), "val": len(split.val)},
            images={"train": len(train_data.labels), "val": len(val_data.labels), "skipped": len(skipped)},
            val_images_of_train_identities=val_images,
            versions=library_versions(),
        ))
        write_split(run_dir / rundir.SPLIT_FILE, RunSplit(train=split.train, val=split.val))

    with strategy.scope():
        backbone = nets.build_backbone(config.image_size, weights, config.feature_layer, config.pooling)
        head = nets.build_head(config.embedding_dim, int(backbone.output_shape[-1]), config.dropout)
        model = nets.assemble(backbone, head, config.image_size)
    if replicas > 1:
        # Batch statistics over the global batch, not each replica's slice: training then
        # computes the same function whatever the number of replicas.
        for layer in _batchnorm_layers(model):
            layer.synchronized = True

    session = _Session(config, strategy, backbone, head, model, train_data, val_data, run_dir, events)
    session.held_out_identities = len(split.val)
    if resume_from is not None:
        session.load(resume_from)
    try:
        session.run()
        selection = session.finish()
    finally:
        session.write_history()
        session.board.close()
    if is_chief(config.strategy):
        rundir.point_latest_at(run_dir)
    return TrainResult(
        run_dir=run_dir,
        config=config,
        history=session.history_frame(),
        split=split,
        train_images=len(train_data.labels),
        val_images=len(val_data.labels),
        skipped=skipped,
        best_epoch=session.state.best_epoch,
        best_metrics=session.state.best_metrics,
        images_per_second=session.throughput(),
        warnings=warnings + session.state.warnings,
        start_metrics=session.state.start_metrics,
        selection=selection,
        validation=_validation_size(split, val_data, val_images),
        pixel_weight=session.state.pixel_weight,
        pixel_weight_chosen_by=session.state.pixel_weight_chosen_by,
    )


def _validation_size(split: IdentitySplit, val_data: _Data, val_images: list[str]) -> dict:
    return {
        "held_out_identities": len(split.val),
        "images": len(val_data.labels),
        "identities": int(len(np.unique(val_data.labels))),
        "images_of_train_identities": len(val_images),
    }


def _batchnorm_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer


def _load(scan, split: IdentitySplit, config: TrainConfig, events: Events):
    """Decode every image once into memory; undecodable files are skipped and reported.

    Returns (train, validation, skipped, held-out images of training identities as paths
    relative to the data folder): validation holds the held-out identities' images and, with
    `val_image_fraction`, a share of each training identity's images (never trained on).
    """
    wanted_names = set(split.train) | set(split.val)
    wanted = [item for item in scan.items if item.label in wanted_names]
    events.stage("decoding images", len(wanted))
    loaded = load_pixels([item.path for item in wanted], config.image_size, on_progress=events.advance)
    skipped = list(scan.skipped) + loaded.failures
    if skipped:
        events.message(describe_skipped(skipped))
    labels = [wanted[i].label for i in loaded.kept]
    held = adaptive.held_out_images(labels, set(split.train), config.val_image_fraction or 0.0, config.seed)
    in_val = set(split.val)

    def subset(mask: np.ndarray, identities: list[str]) -> _Data:
        index = {name: i for i, name in enumerate(identities)}
        ids = np.array([index[label] for label, keep in zip(labels, mask) if keep], np.int32)
        return _Data(images=loaded.images[mask] if len(mask) else loaded.images, labels=ids, names=list(identities))

    train_mask = np.array([label not in in_val for label in labels], bool) & ~held
    val_mask = np.array([label in in_val for label in labels], bool) | held
    val_names = list(split.val) + sorted({label for label, h in zip(labels, held) if h})
    held_paths = [os.path.relpath(wanted[loaded.kept[i]].path, config.data_dir) for i in np.flatnonzero(held)]
    return subset(train_mask, list(split.train)), subset(val_mask, val_names), skipped, held_paths


def is_collapsed(embeddings: np.ndarray | None, active_fraction: float, loss: float, margin: float) -> bool:
    """Has training collapsed the embedding?

    Two signs: the validation embeddings have (almost) no spread around their mean, i.e. every
    image maps to nearly one point; or the loss sits at the margin with every triplet active,
    which is what equal distances everywhere give.
    """
    if embeddings is not None and len(embeddings) > 1:
        spread = float(np.mean(np.sum((embeddings - embeddings.mean(axis=0)) ** 2, axis=1)))
        if spread < 1e-3:
            return True
    return active_fraction > 0.99 and abs(loss - margin) < 0.02 * margin


def _epochs_left(config: TrainConfig, state: checkpoint.TrainerState, phase: str) -> int:
    planned = config.frozen_epochs if phase == FROZEN else config.finetune_epochs
    return 0 if state.phase_done[phase] else max(0, planned - state.phase_epochs[phase])


def make_train_step(net, optimizer, strategy, margin: float, mining: str):
    """A compiled step: embed a P×K batch on every replica, mine, apply gradients, return stats."""

    def replica_step(inputs, labels, image_ids, seed):
        with tf.GradientTape() as tape:
            embeddings = net(inputs, training=True)
            loss, stats = triplet_loss(embeddings, labels, image_ids, margin, mining, seed)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        variables = net.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return stats

    @tf.function
    def step(batch, seed):
        inputs, labels, image_ids = batch
        stats = strategy.run(replica_step, args=(inputs, labels, image_ids, seed))
        # Stats are already global sums on every replica; read replica 0's copy.
        return tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0], stats)

    return step


class _Session:
    """One training run's state: models, optimisers, history, kept epoch, checkpoints."""

    def __init__(self, config, strategy, backbone, head, model, train_data, val_data, run_dir, events):
        self.config = config
        self.strategy = strategy
        self.backbone, self.head, self.model = backbone, head, model
        self.train_data, self.val_data = train_data, val_data
        self.held_out_identities = len(val_data.names)  # validation labels below this: held-out identities (queries)
        self.run_dir = run_dir
        self.events = events
        self.board = tensorboard.TrainingLog(run_dir, enabled=is_chief(config.strategy))  # <run>/logs
        if self.board.problem:
            events.message(self.board.problem)
        self.state = checkpoint.TrainerState()
        self.resume_dir: Path | None = None
        self.sampler = PKSampler(
            train_data.labels, config.batch_size // config.images_per_identity, config.images_per_identity, config.seed
        )
        if self.sampler.batch_size != config.batch_size:
            self._warn(f"only {self.sampler.p} training identities: batches hold {self.sampler.batch_size} images, not {config.batch_size}")
        replicas = strategy.num_replicas_in_sync
        if self.sampler.batch_size % replicas:
            raise UserError(f"batches of {self.sampler.batch_size} images cannot be split evenly across {replicas} replicas; change --batch-size")
        self.steps = config.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, len(train_data.labels) // self.sampler.batch_size)

    def _warn(self, text: str) -> None:
        self.state.warnings.append(text)
        self.events.message(text)

    def load(self, saved: Path) -> None:
        """Continue after checkpoint `saved` (`.../ckpt-N`): weights now, optimiser when its phase starts."""
        self.state = checkpoint.load_state(saved)
        checkpoint.restore(saved, self.model)
        if self.state.sampler_state:
            self.sampler.rng.bit_generator.state = self.state.sampler_state
        self.resume_dir = saved

    def _epochs_left(self, phase: str) -> int:
        return _epochs_left(self.config, self.state, phase)

    # ---- phases -------------------------------------------------------------------------
    def run(self) -> None:
        if self.resume_dir is None:
            self._start()
        if self._epochs_left(FROZEN) > 0:
            self._frozen_phase()
        if self._epochs_left(FINETUNE) > 0:
            self._finetune_phase()

    def _start(self) -> None:
        """Epoch 0: the head set to pass the backbone's output on (PCA), scored before any step."""
        started = time.perf_counter()
        train_features, val_features = self._cached_features()
        self._cache_seconds = time.perf_counter() - started
        fit = start_model.fit_start(self.head, train_features.reshape(-1, train_features.shape[-1]), nets.thumbnail_dims(self.backbone))
        self._choose_pixel_weight(fit, train_features, val_features)
        start_model.set_head(self.head, fit, self.state.pixel_weight)
        self._save_model(rundir.START_MODEL_FILE)  # before any step; a resumed run keeps it
        if val_features is None:
            return
        embeddings = embed(self.head, val_features[0], batch_size=256).vectors
        state = self.state
        state.start_metrics = self._val_scores(embeddings)
        self._start_ap = self._last_ap
        if not state.start_metrics["map_at_r"] == state.start_metrics["map_at_r"]:  # NaN: no query to score
            return
        state.best_score, state.best_epoch = state.start_metrics["map_at_r"], start_model.START_EPOCH
        state.best_metrics = dict(state.start_metrics) | {"phase": "start"}
        self._save_model()
        self.events.stage(f"epoch 0 (the start model, pixel weight {state.pixel_weight:g})")
        self.events.result(f"val P@1 {state.start_metrics['precision_at_1']:.3f}  MAP@R {state.start_metrics['map_at_r']:.3f}")
        if self._use_folds() and self.config.frozen_epochs and self.config.patience:
            self._choose_frozen_length(train_features, val_features)

    def _set_start(self, head, train_features: np.ndarray) -> None:
        """`head` ← the start model fitted on the training features, with the run's pixel weight."""
        start_model.init_head_to_pass_on(head, train_features.reshape(-1, train_features.shape[-1]),
                                         self.state.pixel_weight, nets.thumbnail_dims(self.backbone))

    def _choose_pixel_weight(self, fit: start_model.StartFit, train_features, val_features) -> None:
        """The start's share of pixels: the candidate that validation scores best (identity
        folds when they choose the frozen length, else the held-out identities, with `fit`: the
        start fitted on the training features), else the default."""
        state = self.state
        state.pixel_weight, state.pixel_weight_chosen_by = start_model.DEFAULT_PIXEL_WEIGHT, "default"
        if not nets.thumbnail_dims(self.backbone):
            state.pixel_weight = 0.0
            return
        scores = None
        if self._use_folds():
            scores = folds.start_scores(self, np.concatenate([train_features, val_features], axis=1), self._run_labels())
            chosen_by = "identity folds"
        if scores is None and val_features is not None and self.held_out_identities:
            scores = start_model.scores_by_weight(
                self.head, fit, lambda head: self._val_scores(embed(head, val_features[0], batch_size=256).vectors)["map_at_r"])
            chosen_by = "validation"
        if not scores or any(score != score for score in scores.values()):  # NaN: nothing to score
            return
        state.pixel_weight, state.pixel_weight_chosen_by = start_model.best_pixel_weight(scores), chosen_by
        state.pixel_weight_scores = {f"{weight:g}": score for weight, score in scores.items()}
        self.events.stage("start model's pixel weight")
        self.events.result(f"{state.pixel_weight:g}, chosen by {chosen_by} (start MAP@R for pixel weight "
                           + ", ".join(f"{weight:g}: {score:.3f}" for weight, score in scores.items()) + ")")

    def _run_labels(self) -> np.ndarray:
        """One label per image of the run (training images, then validation images), in one label space."""
        names = self.train_data.names + self.val_data.names
        index = {name: i for i, name in enumerate(dict.fromkeys(names))}
        return np.array([index[self.train_data.names[i]] for i in self.train_data.labels]
                        + [index[self.val_data.names[i]] for i in self.val_data.labels], np.int64)

    def _use_folds(self) -> bool:
        """Too few held-out identities to measure: the frozen phase's length comes from folds
        (unless `--patience 0` asks for every epoch)."""
        return adaptive.too_few_to_measure(self.held_out_identities) and bool(self.config.patience)

    def _choose_frozen_length(self, train_features, val_features) -> None:
        curve = folds.cross_validate(self, np.concatenate([train_features, val_features], axis=1), self._run_labels(),
                                     self.config.frozen_epochs, self.config.patience, tf, make_train_step)
        if curve is None:
            return
        state = self.state
        state.fold_curve = curve
        target = folds.best_epoch(curve)
        if target == 0:
            state.phase_done[FROZEN] = True
        self.events.stage("frozen phase length")
        self.events.result(
            f"{target} epoch{'s' if target != 1 else ''}, chosen by {folds.FOLDS}-fold cross-validation over "
            f"identities (held-out-fold MAP@R after 0…{len(curve) - 1} epochs: {' '.join(f'{v:.3f}' for v in curve)})"
        )

    def _not_worse_than_start(self, epoch: int) -> bool:
        """The folds chose this epoch; the held-out identities may still show it clearly worse than the start."""
        start_ap = getattr(self, "_start_ap", None)
        if start_ap is None:  # resumed: the start's embeddings are not at hand
            train_features, val_features = self._cached_features()
            start_head = nets.build_head(self.config.embedding_dim, train_features.shape[-1], self.config.dropout)
            self._set_start(start_head, train_features)
            self._val_scores(embed(start_head, val_features[0], batch_size=256).vectors)
            start_ap = self._start_ap = self._last_ap
            self._val_scores(embed(self.head, val_features[0], batch_size=256).vectors)
        if start_model.not_worse(self._last_ap, start_ap):
            return True
        self._warn(f"frozen epoch {epoch}, the length the folds chose, is clearly worse than the start model on the held-out "
                   "identities (paired per-query AP@R): the start model is kept")
        return False

    def _frozen_target(self) -> int | None:
        return folds.best_epoch(self.state.fold_curve) if self.state.fold_curve else None

    def _planned(self, phase: str) -> int:
        """The phase's length: the options', or for the frozen phase the one the folds chose."""
        if phase == FINETUNE:
            return self.config.finetune_epochs
        target = self._frozen_target()
        return self.config.frozen_epochs if target is None else target

    def _val_scores(self, embeddings: np.ndarray) -> dict:
        """Validation P@1 and MAP@R of the held-out identities' images as queries.

        The gallery is every validation image: held-out images of training identities (when
        there are) stand there as distractors, never as queries, so the score stays open-set.
        """
        found = evaluate_retrieval(embeddings, self.val_data.labels, ks=(1,))
        queries = found.is_query & (self.val_data.labels < self.held_out_identities)
        self._last_ap = found.average_precision[queries]  # per query, for the paired comparison with the start
        if not queries.any():
            return {"precision_at_1": float("nan"), "map_at_r": float("nan")}
        labels = self.val_data.labels
        return {"precision_at_1": float(np.mean(labels[found.nearest[queries]] == labels[queries])),
                "map_at_r": float(np.mean(found.average_precision[queries]))}

    def _views(self) -> int:
        return self.config.views if self.config.augment else 1

    def _cached_features(self):
        """(train features (views, n, d), val features (views or 1, n_val, d) or None), computed once per session.

        View 0 is the image itself; the others are augmented copies (augment_images, seeded).
        """
        if getattr(self, "_features_cache", None) is None:
            views = self._views()
            val_views = views if self._use_folds() else 1  # folds train on held-out identities too
            self.events.stage("caching backbone features", len(self.train_data.labels) * views + len(self.val_data.labels) * val_views)
            train = self._view_features(self.train_data.images, views)
            val = self._view_features(self.val_data.images, val_views) if len(self.val_data.labels) else None
            self._features_cache = (train, val)
        return self._features_cache

    def _view_features(self, images: np.ndarray, views: int) -> np.ndarray:
        """(views, n, d): the backbone features of the images, then of `views - 1` augmented copies."""
        out = [self._features(images)]
        for view in range(1, views):
            chunks = []
            for start in range(0, len(images), 256):
                augmented = augment_images(tf, images[start:start + 256], self.config.seed, view * 100_003 + start)
                chunks.append(self._features(np.asarray(augmented.numpy(), np.float32)))
            out.append(np.concatenate(chunks))
        return np.stack(out)

    def _optimizer(self, lr: float, variables, epochs: int):
        config = self.config
        schedule = lr
        if config.lr_schedule == "cosine":
            # Decays to a tenth over the phase; the step counter lives in the optimiser, so a
            # resumed run continues the same curve.
            schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, epochs * self.steps), alpha=COSINE_FLOOR)
        if config.weight_decay:
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # kernels only
        else:
            optimizer = keras.optimizers.Adam(schedule)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        return optimizer

    def _restore_optimizer(self, phase: str, optimizer) -> None:
        # Only a checkpoint taken inside this phase holds this phase's optimiser state.
        if self.resume_dir is not None and self.state.rows and self.state.rows[-1]["phase"] == phase and self.state.phase_epochs[phase]:
            checkpoint.restore(self.resume_dir, self.model, optimizer)

    def _frozen_phase(self) -> None:
        config = self.config
        nets.set_backbone_trainable(self.backbone, None, train_batchnorm=False)
        started = time.perf_counter()
        # Cached once: the frozen backbone in inference mode is a fixed function of the image.
        train_features, val_features = self._cached_features()
        cache_seconds = getattr(self, "_cache_seconds", None) or time.perf_counter() - started
        with self.strategy.scope():
            optimizer = self._optimizer(config.lr, self.head.trainable_variables, config.frozen_epochs)
        self._restore_optimizer(FROZEN, optimizer)
        step = make_train_step(self.head, optimizer, self.strategy, config.margin, config.mining)
        first = True
        while self._epochs_left(FROZEN) > 0:
            views = len(train_features)
            dataset = pk_batches(train_features if views > 1 else train_features[0], self.train_data.labels, self.sampler,
                                 self.steps, augment=False, seed=config.seed + self.state.epoch, views=views)
            stats = self._epoch(FROZEN, step, dataset, extra_seconds=cache_seconds if first else 0.0)
            first = False
            embed_val = (lambda: embed(self.head, val_features[0], batch_size=256).vectors) if val_features is not None else None
            self._end_epoch(FROZEN, stats, embed_val, optimizer)

    def _finetune_phase(self) -> None:
        config = self.config
        if self.state.phase_epochs[FINETUNE] == 0:  # the phase starts: patience counts its own epochs
            self.state.epochs_since_best = 0
            if self.state.best_epoch == start_model.START_EPOCH and self.state.phase_epochs[FROZEN]:
                # The frozen epochs did not beat the start: fine-tune from the start model.
                train_features, _ = self._cached_features()
                self._set_start(self.head, train_features)
        with self.strategy.scope():
            nets.set_backbone_trainable(self.backbone, config.finetune_from, train_batchnorm=config.regime.train_batchnorm)
            net = self._image_model()
            optimizer = self._optimizer(config.finetune_lr, net.trainable_variables, config.finetune_epochs)
        self._restore_optimizer(FINETUNE, optimizer)
        step = make_train_step(net, optimizer, self.strategy, config.margin, config.mining)
        while self._epochs_left(FINETUNE) > 0:
            dataset = pk_batches(
                self.train_data.images, self.train_data.labels, self.sampler, self.steps,
                augment=config.augment, seed=config.seed + self.state.epoch,
            )
            stats = self._epoch(FINETUNE, step, dataset)
            embed_val = (lambda: self._embed_images(self.val_data.images)) if len(self.val_data.labels) else None
            self._end_epoch(FINETUNE, stats, embed_val, optimizer)

    def _image_model(self):
        """backbone → head on S×S pixels (the saved model adds resizing in front)."""
        pixels = keras.Input(self.backbone.input_shape[1:])
        return keras.Model(pixels, self.head(self.backbone(pixels)), name="trainable_embedding")

    # ---- one epoch ----------------------------------------------------------------------
    def _epoch(self, phase: str, step, dataset, extra_seconds: float = 0.0) -> dict:
        totals = dict.fromkeys(checkpoint_stat_keys(), 0.0)
        epoch = self.state.epoch + 1
        self.events.stage(f"epoch {epoch} ({phase} {self.state.phase_epochs[phase] + 1}/{self._planned(phase)})", self.steps)
        started = time.perf_counter()
        images = 0
        options = tf.data.Options()
        # Every worker generates the same global batches; each keeps its replicas' slices.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        distributed = self.strategy.experimental_distribute_dataset(dataset.with_options(options))
        for index, batch in enumerate(distributed):
            seed = tf.constant([self.config.seed, epoch * 100_003 + index], tf.int32)
            stats = step(batch, seed)
            crash_point(f"train-epoch-{epoch}-step-{index + 1}")  # tests: killed mid-epoch, after this step
            values = {key: float(getattr(stats, key)) for key in totals}
            for key, value in values.items():
                totals[key] += value
            images += self.sampler.batch_size
            batch_loss = values["loss_sum"] / max(values["loss_count"], 1.0)
            if not math.isfinite(batch_loss):
                raise UserError(
                    f"the loss became {batch_loss} at epoch {epoch}, step {index + 1}; lower the learning rate or use --precision float32"
                )
            self.events.advance(1, f"loss {batch_loss:.3f}  {images / max(time.perf_counter() - started, 1e-9):.0f} img/s")
            self.board.step((epoch - 1) * self.steps + index + 1, batch_loss, images / max(time.perf_counter() - started, 1e-9))
        seconds = time.perf_counter() - started + extra_seconds
        return {
            "loss": totals["loss_sum"] / max(totals["loss_count"], 1.0),
            "active_fraction": totals["active_triplets"] / max(totals["valid_triplets"], 1.0),
            "positive_distance": totals["positive_distance_sum"] / max(totals["positive_pairs"], 1.0),
            "negative_distance": totals["negative_distance_sum"] / max(totals["negative_pairs"], 1.0),
            "images_per_second": images / max(seconds, 1e-9),
            "seconds": seconds,
        }

    # ---- validation, bookkeeping --------------------------------------------------------
    def _features(self, images: np.ndarray) -> np.ndarray:
        return embed(self.backbone, images, batch_size=64, on_progress=self.events.advance).vectors

    def _embed_images(self, images: np.ndarray) -> np.ndarray:
        return embed(self.model, images, batch_size=64).vectors

    def _end_epoch(self, phase: str, stats: dict, embed_val, optimizer) -> None:
        state, config = self.state, self.config
        epoch = state.epoch + 1
        metrics = {"precision_at_1": float("nan"), "map_at_r": float("nan")}
        embeddings = None
        if embed_val is not None:
            embeddings = np.asarray(embed_val(), np.float32)
            metrics = self._val_scores(embeddings)
        collapsed = is_collapsed(embeddings, stats["active_fraction"], stats["loss"], config.margin)
        if collapsed:
            self._warn(
                f"epoch {epoch}: embeddings are collapsing (all images map to nearly one point); "
                "try a lower learning rate, --mining semi-hard or all, or a smaller --margin"
            )
        lr = optimizer.learning_rate
        row = {
            "epoch": epoch, "phase": phase, "loss": stats["loss"], **metrics,
            "active_fraction": stats["active_fraction"],
            "positive_distance": stats["positive_distance"], "negative_distance": stats["negative_distance"],
            "distance_gap": stats["negative_distance"] - stats["positive_distance"],
            "images_per_second": stats["images_per_second"], "seconds": stats["seconds"],
            "lr": float(lr.numpy() if hasattr(lr, "numpy") else lr), "collapsed": collapsed,
        }
        state.rows.append(row)
        self.board.epoch(row)
        state.epoch = epoch
        state.phase_epochs[phase] += 1
        score = metrics["map_at_r"] if embed_val is not None else float(epoch)
        target = self._frozen_target() if phase == FROZEN else None
        keep = start_model.prefer(score, state.best_score, state.best_epoch) if target is None else epoch == target
        if target is not None and epoch >= target:
            state.phase_done[FROZEN] = True  # the length the folds chose
            keep = keep and self._not_worse_than_start(epoch)
        if keep:
            state.best_score, state.best_epoch, state.epochs_since_best = score, epoch, 0
            state.best_metrics = {key: metrics[key] for key in ("precision_at_1", "map_at_r")} | {"phase": phase}
            self._save_model()
            if embeddings is not None and self.board.enabled:  # the projector shows the epoch model.keras holds
                names = [self.val_data.names[label] for label in self.val_data.labels]
                tensorboard.write_projector(self.run_dir / tensorboard.LOGS / "projector", embeddings, names, self.val_data.images)
        else:
            state.epochs_since_best += 1
            patience = config.patience if phase == FROZEN else config.finetune_patience
            if target is None and patience and state.epochs_since_best >= patience and self._epochs_left(phase) > 0:
                state.phase_done[phase] = True
                self.events.message(f"early stop of the {phase} phase after epoch {epoch}: validation MAP@R has not "
                                    f"improved for {patience} epoch{'s' if patience > 1 else ''}")
        state.sampler_state = self.sampler.rng.bit_generator.state
        checkpoint.save(self.run_dir / rundir.CHECKPOINTS, self.model, optimizer, state)
        self.write_history()
        self.events.result(epoch_line(row))

    def finish(self) -> str | None:
        """After the last epoch: the one line comparing the kept model with the start (also in config.json)."""
        state = self.state
        line = start_model.verdict(state.start_metrics, state.best_epoch, state.best_metrics,
                                   [row["map_at_r"] for row in state.rows], state.fold_curve)
        if line is None:
            return None
        if state.best_epoch == start_model.START_EPOCH:
            self._warn(line)
        else:
            self.events.stage("model selection")
            self.events.result(line)
        if is_chief(self.config.strategy):
            recorded = read_config(self.run_dir / rundir.CONFIG_FILE)
            write_config(self.run_dir / rundir.CONFIG_FILE, dataclasses.replace(recorded, selection=RunSelection(
                start=state.start_metrics, kept_epoch=state.best_epoch, kept=state.best_metrics, line=line,
                frozen_length_by_folds=state.fold_curve or None,
                pixel_weight=state.pixel_weight, pixel_weight_chosen_by=state.pixel_weight_chosen_by,
                pixel_weight_scores=state.pixel_weight_scores or None,
            )))
        return line

    def _save_model(self, name: str = rundir.MODEL_FILE) -> None:
        with atomic_path(self.run_dir / name, suffix=".keras") as temporary:
            self.model.save(temporary)

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.state.rows, columns=HISTORY_COLUMNS)

    def write_history(self) -> None:
        if not self.state.rows:
            return
        frame = self.history_frame()
        write_csv(self.run_dir / rundir.HISTORY_FILE, frame)
        plot_history(frame, self.run_dir / rundir.LOSS_PLOT, self.state.start_metrics)

    def throughput(self) -> dict:
        """Images/s per phase, leaving out each phase's first epoch (caching, tracing) when there are more."""
        frame = self.history_frame()
        out = {}
        for phase in PHASES:
            rows = frame[frame["phase"] == phase]["images_per_second"]
            if len(rows):
                out[phase] = float(rows.iloc[1:].mean() if len(rows) > 1 else rows.iloc[0])
        return out


def epoch_line(row: dict) -> str:
    """One history row as the line a log shows: loss, speed, validation scores, time."""
    scores = "no validation"
    if row["map_at_r"] == row["map_at_r"]:  # not NaN
        scores = f"val P@1 {row['precision_at_1']:.3f}  MAP@R {row['map_at_r']:.3f}"
    return (f"loss {row['loss']:.4f}  {row['images_per_second']:.0f} img/s  {scores}  {row['seconds']:.1f} s"
            + ("  (collapsed)" if row["collapsed"] else ""))


def checkpoint_stat_keys() -> tuple[str, ...]:
    from siamcli.models.triplet_loss import TripletStats

    return TripletStats._fields
