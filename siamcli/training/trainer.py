"""The two-phase trainer.

Phase "frozen": the backbone is frozen and nothing random acts before it, so every image's
backbone features are computed once and the head trains on those cached features (an epoch
then costs a few matrix products instead of a ResNet50 pass per image).
Phase "finetune": the backbone trains from `finetune_from` on, on augmented images.

Both phases draw P×K batches, embed each image once, mine triplets inside the batch, and run
under a tf.distribute strategy (the global batch is split across replicas). After every
epoch the held-out identities are embedded and scored; `model.keras` always holds the best
epoch by validation MAP@R.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siamcli import __version__
from siamcli.atomic import atomic_path, write_csv, write_json
from siamcli.data.pipeline import PKSampler, load_images, pk_batches
from siamcli.data.scan import Skipped, scan_folder
from siamcli.data.split import IdentitySplit, split_identities
from siamcli.errors import UserError
from siamcli.evaluation.metrics import retrieval_metrics
from siamcli.models.backbone_weights import resolve_weights
from siamcli.training import rundir
from siamcli.training.config import MIN_STEPS_PER_EPOCH, TrainConfig
from siamcli.training.plots import plot_history
from siamcli.training.strategy import choose_strategy
from siamcli.tf_runtime import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402

from siamcli.models import embedding as nets  # noqa: E402
from siamcli.models.triplet_loss import triplet_loss  # noqa: E402

FROZEN, FINETUNE = "frozen", "finetune"
HISTORY_COLUMNS = [
    "epoch", "phase", "loss", "precision_at_1", "map_at_r", "active_fraction",
    "positive_distance", "negative_distance", "distance_gap", "images_per_second", "seconds", "lr", "collapsed",
]


class TrainingEvents:
    """What the trainer tells its caller; the CLI draws a progress display from it."""

    def message(self, text: str) -> None: ...
    def loading(self, done: int, total: int) -> None: ...
    def phase_started(self, phase: str, epochs: int, steps: int) -> None: ...
    def step_done(self, phase: str, epoch: int, step: int, loss: float, images_per_second: float) -> None: ...
    def epoch_done(self, row: dict) -> None: ...


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
    images_per_second: dict = field(default_factory=dict)  # phase → mean over its epochs
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "model": str(self.run_dir / rundir.MODEL_FILE),
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


def train(config: TrainConfig, out: str | None = None, force: bool = False, events: TrainingEvents | None = None) -> TrainResult:
    events = events or TrainingEvents()
    config = config.validate().resolve()
    weights = resolve_weights(config.weights)  # fail fast, before any slow work
    scan = scan_folder(config.data_dir, labelled=True)
    split = split_identities(scan.counts(), config.val_fraction, config.seed)
    warnings: list[str] = []
    singles = sorted(name for name, count in scan.counts().items() if count == 1 and name in split.train)
    if singles:
        warnings.append(
            f"{len(singles)} identit{'y has' if len(singles) == 1 else 'ies have'} a single image and can only serve as "
            f"negatives: {', '.join(singles[:10])}{' …' if len(singles) > 10 else ''}"
        )
    if not split.val:
        warnings.append("too few identities to hold any out: no validation metrics, model.keras is the last epoch")

    run_dir = rundir.new_run_dir(out, force)
    train_data, val_data, skipped = _load(scan, split, config.image_size, events)
    if len(np.unique(train_data.labels[np.bincount(train_data.labels)[train_data.labels] >= 2])) < 2:
        raise UserError("fewer than 2 training identities have 2 or more readable images; add images")
    for text in warnings:
        events.message(text)

    strategy = choose_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % (replicas * 1) != 0:
        raise UserError(f"--batch-size {config.batch_size} must divide evenly across {replicas} replicas")
    keras.mixed_precision.set_dtype_policy(config.precision)
    keras.utils.set_random_seed(config.seed)

    write_json(run_dir / rundir.CONFIG_FILE, {
        **config.to_json(),
        "replicas": replicas,
        "workers": 1,
        "strategy_class": type(strategy).__name__,
        "classes": {"train": len(split.train), "val": len(split.val)},
        "images": {"train": len(train_data.labels), "val": len(val_data.labels), "skipped": len(skipped)},
        "versions": library_versions(),
    })
    write_json(run_dir / rundir.SPLIT_FILE, split.to_json())

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
    try:
        session.run()
    finally:
        session.write_history()
    rundir.point_latest_at(run_dir)
    result = TrainResult(
        run_dir=run_dir,
        config=config,
        history=session.history_frame(),
        split=split,
        train_images=len(train_data.labels),
        val_images=len(val_data.labels),
        skipped=skipped,
        best_epoch=session.best_epoch,
        best_metrics=session.best_metrics,
        images_per_second=session.throughput(),
        warnings=warnings + session.warnings,
    )
    return result


def _batchnorm_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer


def _load(scan, split: IdentitySplit, image_size: int, events: TrainingEvents):
    """Decode every image once into memory; undecodable files are skipped and reported."""
    names = sorted(set(split.train) | set(split.val))
    wanted = [item for item in scan.items if item.label in set(names)]
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        done += count
        events.loading(done, len(wanted))

    loaded = load_images([item.path for item in wanted], image_size, on_progress=progress)
    skipped = list(scan.skipped) + loaded.failures
    if skipped:
        from siamcli.data.scan import describe_skipped

        events.message(describe_skipped(skipped))
    labels = [wanted[i].label for i in loaded.kept]

    def subset(identities: list[str]) -> _Data:
        mask = np.array([label in set(identities) for label in labels], bool)
        index = {name: i for i, name in enumerate(identities)}
        ids = np.array([index[label] for label, keep in zip(labels, mask) if keep], np.int32)
        return _Data(images=loaded.images[mask] if len(mask) else loaded.images, labels=ids, names=list(identities))

    return subset(split.train), subset(split.val), skipped


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
    """One training run's state: models, optimizers, history, best epoch."""

    def __init__(self, config, strategy, backbone, head, model, train_data, val_data, run_dir, events):
        self.config = config
        self.strategy = strategy
        self.backbone, self.head, self.model = backbone, head, model
        self.train_data, self.val_data = train_data, val_data
        self.run_dir = run_dir
        self.events = events
        self.rows: list[dict] = []
        self.best_epoch: int | None = None
        self.best_metrics: dict = {}
        self.best_score = -math.inf
        self.warnings: list[str] = []
        self.sampler = PKSampler(
            train_data.labels, config.batch_size // config.images_per_identity, config.images_per_identity, config.seed
        )
        if self.sampler.batch_size != config.batch_size:
            self.warnings.append(
                f"only {self.sampler.p} training identities: batches hold {self.sampler.batch_size} images, not {config.batch_size}"
            )
            events.message(self.warnings[-1])
        self.steps = config.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, len(train_data.labels) // self.sampler.batch_size)
        if self.sampler.batch_size % strategy.num_replicas_in_sync:
            raise UserError(
                f"batches of {self.sampler.batch_size} images cannot be split across {strategy.num_replicas_in_sync} replicas"
            )

    # ---- phases -------------------------------------------------------------------------
    def run(self) -> None:
        config = self.config
        if config.frozen_epochs:
            self._frozen_phase()
        if config.finetune_epochs:
            self._finetune_phase()

    def _frozen_phase(self) -> None:
        config = self.config
        nets.set_backbone_trainable(self.backbone, None, train_batchnorm=False)
        self.events.phase_started(FROZEN, config.frozen_epochs, self.steps)
        started = time.perf_counter()
        # Cached once: the frozen backbone in inference mode is a fixed function of the image.
        train_features = self._features(self.train_data.images)
        val_features = self._features(self.val_data.images) if len(self.val_data.labels) else None
        cache_seconds = time.perf_counter() - started
        with self.strategy.scope():
            optimizer = keras.optimizers.Adam(config.lr)
            optimizer.build(self.head.trainable_variables)
        step = self._make_step(self.head, optimizer)
        for epoch_in_phase in range(config.frozen_epochs):
            dataset = pk_batches(train_features, self.train_data.labels, self.sampler, self.steps, augment=False, seed=config.seed)
            extra = cache_seconds if epoch_in_phase == 0 else 0.0
            stats = self._epoch(FROZEN, step, dataset, extra_seconds=extra)
            embed_val = (lambda: self.head(val_features, training=False)) if val_features is not None else None
            self._end_epoch(FROZEN, stats, embed_val, config.lr)

    def _finetune_phase(self) -> None:
        config = self.config
        with self.strategy.scope():
            nets.set_backbone_trainable(self.backbone, config.finetune_from, train_batchnorm=self.config.regime.train_batchnorm)
            optimizer = keras.optimizers.Adam(config.finetune_lr)
            if config.precision == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            net = self._image_model()
            optimizer.build(net.trainable_variables)
        self.events.phase_started(FINETUNE, config.finetune_epochs, self.steps)
        step = self._make_step(net, optimizer)
        for _ in range(config.finetune_epochs):
            dataset = pk_batches(
                self.train_data.images, self.train_data.labels, self.sampler, self.steps,
                augment=config.augment, seed=config.seed + len(self.rows),
            )
            stats = self._epoch(FINETUNE, step, dataset)
            embed_val = (lambda: self._embed_images(self.val_data.images)) if len(self.val_data.labels) else None
            self._end_epoch(FINETUNE, stats, embed_val, config.finetune_lr)

    def _image_model(self):
        """backbone → head on S×S pixels (the saved model adds resizing in front)."""
        pixels = keras.Input(self.backbone.input_shape[1:])
        return keras.Model(pixels, self.head(self.backbone(pixels)), name="trainable_embedding")

    # ---- steps --------------------------------------------------------------------------
    def _make_step(self, net, optimizer):
        return make_train_step(net, optimizer, self.strategy, self.config.margin, self.config.mining)

    def _epoch(self, phase: str, step, dataset, extra_seconds: float = 0.0) -> dict:
        totals = dict.fromkeys(
            ("loss_sum", "loss_count", "valid_triplets", "active_triplets",
             "positive_distance_sum", "positive_pairs", "negative_distance_sum", "negative_pairs"), 0.0)
        epoch = len(self.rows) + 1
        started = time.perf_counter()
        images = 0
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        for index, batch in enumerate(distributed):
            seed = tf.constant([self.config.seed, epoch * 100_003 + index], tf.int32)
            stats = step(batch, seed)
            values = {key: float(getattr(stats, key)) for key in totals}
            for key, value in values.items():
                totals[key] += value
            images += self.sampler.batch_size
            elapsed = time.perf_counter() - started
            batch_loss = values["loss_sum"] / max(values["loss_count"], 1.0)
            if not math.isfinite(batch_loss):
                raise FloatingPointError(
                    f"the loss became {batch_loss} at epoch {epoch}, step {index + 1}; lower the learning rate or use --precision float32"
                )
            self.events.step_done(phase, epoch, index + 1, batch_loss, images / max(elapsed, 1e-9))
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
        @tf.function(reduce_retracing=True)
        def forward(batch):
            return self.backbone(batch, training=False)

        chunks = [forward(tf.cast(images[i : i + 64], tf.float32)).numpy() for i in range(0, len(images), 64)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.backbone.output_shape[-1]), np.float32)

    def _embed_images(self, images: np.ndarray) -> np.ndarray:
        chunks = [self.model(tf.cast(images[i : i + 64], tf.float32), training=False).numpy() for i in range(0, len(images), 64)]
        return np.concatenate(chunks)

    def _end_epoch(self, phase: str, stats: dict, embed_val, lr: float) -> None:
        epoch = len(self.rows) + 1
        metrics = {"precision_at_1": float("nan"), "map_at_r": float("nan")}
        collapsed = False
        if embed_val is not None:
            embeddings = np.asarray(embed_val(), np.float32)
            scores = retrieval_metrics(embeddings, self.val_data.labels, ks=(1,))
            metrics = {"precision_at_1": scores.precision_at_1, "map_at_r": scores.map_at_r}
            spread = float(np.mean(np.sum((embeddings - embeddings.mean(axis=0)) ** 2, axis=1)))
            collapsed = spread < 1e-3
        # A loss pinned at the margin with every triplet active means all distances are equal.
        if stats["active_fraction"] > 0.99 and abs(stats["loss"] - self.config.margin) < 0.02 * self.config.margin:
            collapsed = True
        if collapsed:
            warning = (
                f"epoch {epoch}: embeddings are collapsing (all images map to nearly one point); "
                "try a lower learning rate, --mining semi-hard or all, or a smaller --margin"
            )
            self.warnings.append(warning)
            self.events.message(warning)
        row = {
            "epoch": epoch, "phase": phase, "loss": stats["loss"], **metrics,
            "active_fraction": stats["active_fraction"],
            "positive_distance": stats["positive_distance"], "negative_distance": stats["negative_distance"],
            "distance_gap": stats["negative_distance"] - stats["positive_distance"],
            "images_per_second": stats["images_per_second"], "seconds": stats["seconds"], "lr": lr, "collapsed": collapsed,
        }
        self.rows.append(row)
        score = metrics["map_at_r"] if embed_val is not None else float(epoch)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_metrics = {key: metrics[key] for key in ("precision_at_1", "map_at_r")} | {"phase": phase}
            self._save_model()
        self._save_checkpoint()
        self.write_history()
        self.events.epoch_done(row)

    def _save_model(self) -> None:
        with atomic_path(self.run_dir / rundir.MODEL_FILE, suffix=".keras") as temporary:
            self.model.save(temporary)

    def _save_checkpoint(self) -> None:
        with atomic_path(self.run_dir / rundir.CHECKPOINTS / "last.weights.h5", suffix=".weights.h5") as temporary:
            self.model.save_weights(temporary)
        write_json(self.run_dir / rundir.CHECKPOINTS / "last.json", {"epoch": len(self.rows), "phase": self.rows[-1]["phase"]})

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=HISTORY_COLUMNS)

    def write_history(self) -> None:
        if not self.rows:
            return
        frame = self.history_frame()
        write_csv(self.run_dir / rundir.HISTORY_FILE, frame)
        plot_history(frame, self.run_dir / rundir.LOSS_PLOT)

    def throughput(self) -> dict:
        frame = self.history_frame()
        out = {}
        for phase in (FROZEN, FINETUNE):
            rows = frame[frame["phase"] == phase]
            if len(rows):
                # The first frozen epoch includes caching the features; report the steady state too.
                out[phase] = float(rows["images_per_second"].iloc[1:].mean() if len(rows) > 1 else rows["images_per_second"].iloc[0])
        return out
