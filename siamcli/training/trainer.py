"""The two-phase trainer: `train` starts a run, `resume` continues one.

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

This module prepares a run (the data, decoded once; the networks; config.json and split.json)
and reports it; session.py runs its phases from the parts that hold one concept each.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from siamcli import __version__, rundir
from siamcli.data.scan import Skipped, check_identity_layout, describe_skipped, scan_folder
from siamcli.data.split import IdentitySplit, split_identities
from siamcli.errors import Interrupted, UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.models.backbone_weights import WeightsChoice, resolve_weights
from siamcli.run_config import RunConfig, RunSplit, read_config, read_split, write_config, write_split
from siamcli.tf_runtime import import_tensorflow
from siamcli.training import adaptive, checkpoint
from siamcli.training.config import PHASES, TrainConfig
from siamcli.training.session import ImageSet, Networks, Progress, Session
from siamcli.training.strategy import choose_strategy, is_chief, worker_count

tf = import_tensorflow()
import keras  # noqa: E402

from siamcli.models import embedding as nets  # noqa: E402
from siamcli.models.embed import load_pixels  # noqa: E402


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


@dataclass(frozen=True)
class _Resume:
    checkpoint: Path  # the last complete epoch's (`.../ckpt-N`)
    recorded: RunConfig  # the run's config.json, to which the selection is added at the end


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
    return _run(config, weights, scan, split, run_dir, events, resumed=None)


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
    if not any(Progress.of(state).left(config, phase) for phase in PHASES):
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
    return _run(config, WeightsChoice("none", None), scan, split, run_dir, events, resumed=_Resume(saved, recorded))


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


def _run(config, weights, scan, split, run_dir, events, resumed: _Resume | None) -> TrainResult:
    previous_policy = keras.mixed_precision.dtype_policy()
    try:
        return _run_with_policy(config, weights, scan, split, run_dir, events, resumed)
    except KeyboardInterrupt as exc:
        raise Interrupted(_how_to_continue(run_dir)) from exc
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)  # a library must not leak global state


def _run_with_policy(config, weights, scan, split, run_dir, events, resumed: _Resume | None) -> TrainResult:
    warnings = _split_warnings(scan, split)
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else.
    strategy = choose_strategy(config.strategy)
    config = adaptive.adapt(config, len(split.train), len(split.val))  # what config.json records
    train_data, val_data, skipped, val_images = _load(scan, split, config, events)
    if len(np.unique(train_data.labels[np.bincount(train_data.labels)[train_data.labels] >= 2])) < 2:
        raise UserError("fewer than 2 training identities have 2 or more readable images; add images")
    for text in warnings:
        events.message(text)

    keras.mixed_precision.set_dtype_policy(config.precision)
    keras.utils.set_random_seed(config.seed)
    if resumed is None:
        recorded = _recorded(config, run_dir, strategy, split, (train_data, val_data, skipped, val_images))
        write_config(run_dir / rundir.CONFIG_FILE, recorded)
        write_split(run_dir / rundir.SPLIT_FILE, RunSplit(train=split.train, val=split.val))
    else:
        recorded = resumed.recorded
    session = Session(config, strategy, _networks(config, weights, strategy), train_data, val_data, len(split.val),
                      run_dir, events, resumed.checkpoint if resumed else None)
    try:
        session.run()
        line, selection = session.finish()
    finally:
        session.write_history()
        session.close()
    if is_chief(config.strategy):
        if selection is not None:
            write_config(run_dir / rundir.CONFIG_FILE, dataclasses.replace(recorded, selection=selection))
        rundir.point_latest_at(run_dir)
    return TrainResult(
        run_dir=run_dir, config=config, history=session.history.frame(), split=split,
        train_images=len(train_data.labels), val_images=len(val_data.labels), skipped=skipped,
        best_epoch=session.selection.best_epoch, best_metrics=session.selection.best_metrics,
        images_per_second=session.history.throughput(), warnings=warnings + session.warnings,
        start_metrics=session.selection.start_metrics, selection=line, validation=_validation_size(split, val_data, val_images),
        pixel_weight=session.start.pixel.weight, pixel_weight_chosen_by=session.start.pixel.chosen_by,
    )


def _split_warnings(scan, split: IdentitySplit) -> list[str]:
    """What the split cannot use: single-image training identities, no identity held out."""
    warnings = []
    singles = sorted(name for name, count in scan.counts().items() if count == 1 and name in split.train)
    if singles:
        warnings.append(
            f"{len(singles)} identit{'y has' if len(singles) == 1 else 'ies have'} a single image and can only serve as "
            f"negatives: {', '.join(singles[:10])}{' …' if len(singles) > 10 else ''}"
        )
    if not split.val:
        warnings.append("too few identities to hold any out: no validation metrics, model.keras is the last epoch")
    return warnings


def _recorded(config: TrainConfig, run_dir: Path, strategy, split: IdentitySplit, loaded: tuple) -> RunConfig:
    """config.json of a new run: its resolved options and what it ran on."""
    train_data, val_data, skipped, val_images = loaded
    return RunConfig(
        options=config.to_json(),
        data_dir_from_run=os.path.relpath(config.data_dir, run_dir.resolve()),
        replicas=strategy.num_replicas_in_sync,
        workers=worker_count(config.strategy),
        strategy_class=type(strategy).__name__,
        classes={"train": len(split.train), "val": len(split.val)},
        images={"train": len(train_data.labels), "val": len(val_data.labels), "skipped": len(skipped)},
        val_images_of_train_identities=val_images,
        versions=library_versions(),
    )


def _networks(config: TrainConfig, weights: WeightsChoice, strategy) -> Networks:
    with strategy.scope():
        backbone = nets.build_backbone(config.image_size, weights, config.feature_layer, config.pooling)
        head = nets.build_head(config.embedding_dim, int(backbone.output_shape[-1]), config.dropout)
        model = nets.assemble(backbone, head, config.image_size)
    if strategy.num_replicas_in_sync > 1:
        # Batch statistics over the global batch, not each replica's slice: training then
        # computes the same function whatever the number of replicas.
        for layer in _batchnorm_layers(model):
            layer.synchronized = True
    return Networks(backbone, head, model)


def _validation_size(split: IdentitySplit, val_data: ImageSet, val_images: list[str]) -> dict:
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

    def subset(mask: np.ndarray, identities: list[str]) -> ImageSet:
        index = {name: i for i, name in enumerate(identities)}
        ids = np.array([index[label] for label, keep in zip(labels, mask) if keep], np.int32)
        return ImageSet(images=loaded.images[mask] if len(mask) else loaded.images, labels=ids, names=list(identities))

    train_mask = np.array([label not in in_val for label in labels], bool) & ~held
    val_mask = np.array([label in in_val for label in labels], bool) | held
    val_names = list(split.val) + sorted({label for label, h in zip(labels, held) if h})
    held_paths = [os.path.relpath(wanted[loaded.kept[i]].path, config.data_dir) for i in np.flatnonzero(held)]
    return subset(train_mask, list(split.train)), subset(val_mask, val_names), skipped, held_paths
