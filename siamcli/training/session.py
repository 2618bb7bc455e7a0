"""One training run's phases and epoch loop, built from the parts that each hold one concept.

    step.py        the train step and its optimiser (TrainStep), for each phase and each fold
    features.py    the frozen-phase feature cache
    validation.py  an epoch's validation scores (returned, never stored here)
    selection.py   the start's score, the kept epoch, the folds' target, patience
    history.py     the rows of history.csv, loss.png and the epoch line
    checkpoint.py  a checkpoint after every epoch, and what a resume reads back

Epoch 0 is the start model (start_model.py): fitted on the cached training features, its
pixel weight chosen by the folds or validation, written to start.keras and scored. Then the
frozen phase trains the head on the cached features, and the fine-tune phase the backbone from
`finetune_from` on, on augmented images. After each epoch: validation, selection (model.keras),
a checkpoint, history.csv.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamcli import rundir
from siamcli.atomic import atomic_path
from siamcli.data.pipeline import PKSampler, pk_batches
from siamcli.errors import UserError
from siamcli.events import Events
from siamcli.faults import crash_point
from siamcli.run_config import RunSelection
from siamcli.tf_runtime import import_tensorflow
from siamcli.training import adaptive, folds, tensorboard
from siamcli.training.checkpoint import Checkpoints, TrainerState, load_state, restore
from siamcli.training.config import FINETUNE, FROZEN, MIN_STEPS_PER_EPOCH, TrainConfig
from siamcli.training.features import FeatureCache
from siamcli.training.history import History, epoch_line, epoch_row, is_collapsed
from siamcli.training.selection import Selection
from siamcli.training.start import Start
from siamcli.training.start_model import PixelWeight
from siamcli.training.step import EpochTotals, StepPlan, TrainStep
from siamcli.training.strategy import is_chief
from siamcli.training.validation import Scores, Validation

import_tensorflow()
import keras  # noqa: E402

from siamcli.models import embedding as nets  # noqa: E402
from siamcli.models.embed import embed  # noqa: E402


@dataclass
class ImageSet:
    images: np.ndarray  # (n, S, S, 3) uint8
    labels: np.ndarray  # (n,) int32 identity index
    names: list[str]  # identity names, indexed by label


@dataclass(frozen=True)
class Networks:
    backbone: object
    head: object
    model: object  # the saved network: resizing → backbone → head


@dataclass
class Progress:
    """Complete epochs, per phase, and which phases are over (early-stopped or at their length)."""

    epoch: int
    phase_epochs: dict
    phase_done: dict

    @classmethod
    def of(cls, state: TrainerState) -> Progress:
        return cls(state.epoch, dict(state.phase_epochs), dict(state.phase_done))

    def left(self, config: TrainConfig, phase: str) -> int:
        planned = config.frozen_epochs if phase == FROZEN else config.finetune_epochs
        return 0 if self.phase_done[phase] else max(0, planned - self.phase_epochs[phase])


class Session:
    """One run: its parts, each built here from the run's state (a fresh one, or a checkpoint's)."""

    def __init__(self, config: TrainConfig, strategy, networks: Networks, train: ImageSet, val: ImageSet,
                 held_out_identities: int, run_dir: Path, events: Events, resume_from: Path | None):
        self.config, self.nets, self.train, self.val, self.run_dir, self.events = config, networks, train, val, run_dir, events
        state = load_state(resume_from) if resume_from is not None else TrainerState()
        self.warnings = list(state.warnings)
        self.board = tensorboard.TrainingLog(run_dir, enabled=is_chief(config.strategy))  # <run>/logs
        if self.board.problem:
            events.message(self.board.problem)
        self.sampler = PKSampler(train.labels, config.batch_size // config.images_per_identity, config.images_per_identity, config.seed)
        if self.sampler.batch_size != config.batch_size:
            text = f"only {self.sampler.p} training identities: batches hold {self.sampler.batch_size} images, not {config.batch_size}"
            if resume_from is None:
                self._warn(text)
            else:  # the checkpoint's warnings hold it already
                events.message(text)
        if resume_from is not None:  # the weights now; each phase's optimiser when the phase starts
            restore(resume_from, networks.model)
            if state.sampler_state:
                self.sampler.rng.bit_generator.state = state.sampler_state
        if self.sampler.batch_size % strategy.num_replicas_in_sync:
            raise UserError(f"batches of {self.sampler.batch_size} images cannot be split evenly across "
                            f"{strategy.num_replicas_in_sync} replicas; change --batch-size")
        steps = config.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, len(train.labels) // self.sampler.batch_size)
        self.plan = StepPlan(config, strategy, steps, self.sampler.p)
        self.progress, self.resumed = Progress.of(state), resume_from is not None
        self.selection, self.history = Selection(config, state), History(run_dir, state.rows)
        self.checkpoints = Checkpoints(run_dir, resume_from)
        self.validation = Validation(val.labels, held_out_identities)
        self.use_folds = adaptive.too_few_to_measure(held_out_identities) and bool(config.patience)
        views = config.views if config.augment else 1
        # Folds train on the held-out identities too: their images need every view.
        self.cache = FeatureCache(networks.backbone, train.images, val.images, views, views if self.use_folds else 1, config.seed, events)
        self.start = Start(config, self.cache, self.validation, nets.thumbnail_dims(networks.backbone),
                           PixelWeight(state.pixel_weight, state.pixel_weight_chosen_by, dict(state.pixel_weight_scores)), events)

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        self.events.message(text)

    def run(self) -> None:
        if not self.resumed:
            self._start()
        if self.progress.left(self.config, FROZEN) > 0:
            self._frozen_phase()
        if self.progress.left(self.config, FINETUNE) > 0:
            self._finetune_phase()

    # ---- epoch 0 ------------------------------------------------------------------------
    def _start(self) -> None:
        """The head set to pass the backbone's output on (PCA), written as start.keras, scored before any step."""
        train_features, val_features = self.cache.get()
        fold_data = None
        if self.use_folds:
            labels = folds.run_labels(self.train.names, self.train.labels, self.val.names, self.val.labels)
            fold_data = (np.concatenate([train_features, val_features], axis=1), labels)
        self.start.fit(self.nets.head, fold_data)
        self._save_model(rundir.START_MODEL_FILE)  # before any step; a resumed run keeps it
        if val_features is None or not self.selection.keep_start(self.validation.score_head(self.nets.head, val_features)):
            return
        self._save_model()
        scores = self.selection.start_metrics
        self.events.stage(f"epoch 0 (the start model, pixel weight {self.start.pixel.weight:g})")
        self.events.result(f"val P@1 {scores['precision_at_1']:.3f}  MAP@R {scores['map_at_r']:.3f}")
        if self.use_folds and self.config.frozen_epochs and self.config.patience:
            curve = folds.cross_validate(*fold_data, self.plan, self.start.pixel.weight, self.start.pixel_dims, self.events)
            if curve is not None:
                if self.selection.set_fold_curve(curve) == 0:
                    self.progress.phase_done[FROZEN] = True
                self.events.stage("frozen phase length")
                self.events.result(folds.describe(curve))

    # ---- phases -------------------------------------------------------------------------
    def _frozen_phase(self) -> None:
        nets.set_backbone_trainable(self.nets.backbone, None, train_batchnorm=False)
        # Cached once: the frozen backbone in inference mode is a fixed function of the image.
        train_features, val_features = self.cache.get()
        step = self.plan.train_step(self.nets.head, self.config.lr, self.config.frozen_epochs)
        self._restore_optimizer(FROZEN, step)
        extra_seconds = self.cache.seconds  # the first epoch's time includes the caching
        while self.progress.left(self.config, FROZEN) > 0:
            views = len(train_features)
            dataset = pk_batches(train_features if views > 1 else train_features[0], self.train.labels, self.sampler,
                                 self.plan.steps_per_epoch, augment=False, seed=self.config.seed + self.progress.epoch, views=views)
            stats = self._epoch(FROZEN, step, dataset, extra_seconds)
            extra_seconds = 0.0
            embed_val = (lambda: embed(self.nets.head, val_features[0], batch_size=256).vectors) if val_features is not None else None
            self._end_epoch(FROZEN, stats, embed_val, step)

    def _finetune_phase(self) -> None:
        config = self.config
        if self.progress.phase_epochs[FINETUNE] == 0:  # the phase starts: patience counts its own epochs
            self.selection.restart_patience()
            if self.selection.start_kept and self.progress.phase_epochs[FROZEN]:
                self.start.set(self.nets.head)  # the frozen epochs did not beat the start: fine-tune from it
        with self.plan.strategy.scope():
            nets.set_backbone_trainable(self.nets.backbone, config.finetune_from, train_batchnorm=config.regime.train_batchnorm)
            net = self._image_model()
        step = self.plan.train_step(net, config.finetune_lr, config.finetune_epochs)
        self._restore_optimizer(FINETUNE, step)
        while self.progress.left(config, FINETUNE) > 0:
            dataset = pk_batches(self.train.images, self.train.labels, self.sampler, self.plan.steps_per_epoch,
                                 augment=config.augment, seed=config.seed + self.progress.epoch)
            stats = self._epoch(FINETUNE, step, dataset)
            embed_val = (lambda: embed(self.nets.model, self.val.images, batch_size=64).vectors) if len(self.val.labels) else None
            self._end_epoch(FINETUNE, stats, embed_val, step)

    def _image_model(self):
        """backbone → head on S×S pixels (the saved model adds resizing in front)."""
        pixels = keras.Input(self.nets.backbone.input_shape[1:])
        return keras.Model(pixels, self.nets.head(self.nets.backbone(pixels)), name="trainable_embedding")

    def _restore_optimizer(self, phase: str, step: TrainStep) -> None:
        self.checkpoints.restore_optimizer(self.nets.model, step.optimizer, phase, self.history.last_phase,
                                           self.progress.phase_epochs[phase])

    # ---- one epoch ----------------------------------------------------------------------
    def _epoch(self, phase: str, step: TrainStep, dataset, extra_seconds: float = 0.0) -> dict:
        epoch, steps, totals = self.progress.epoch + 1, self.plan.steps_per_epoch, EpochTotals()
        self.events.stage(f"epoch {epoch} ({phase} {self.progress.phase_epochs[phase] + 1}/{self.selection.planned(phase)})", steps)
        started, images = time.perf_counter(), 0
        for index, stats in enumerate(step.run(dataset, self.config.seed, epoch)):
            crash_point(f"train-epoch-{epoch}-step-{index + 1}")  # tests: killed mid-epoch, after this step
            batch_loss = totals.add(stats)
            images += self.sampler.batch_size
            if not math.isfinite(batch_loss):
                raise UserError(
                    f"the loss became {batch_loss} at epoch {epoch}, step {index + 1}; lower the learning rate or use --precision float32"
                )
            speed = images / max(time.perf_counter() - started, 1e-9)
            self.events.advance(1, f"loss {batch_loss:.3f}  {speed:.0f} img/s")
            self.board.step((epoch - 1) * steps + index + 1, batch_loss, speed)
        return totals.row(images, time.perf_counter() - started + extra_seconds)

    def _end_epoch(self, phase: str, stats: dict, embed_val, step: TrainStep) -> None:
        """Validation, selection, a checkpoint and history.csv: everything after an epoch's last step."""
        epoch = self.progress.epoch + 1
        embeddings = np.asarray(embed_val(), np.float32) if embed_val is not None else None
        scores = self.validation.score(embeddings) if embeddings is not None else None
        collapsed = is_collapsed(embeddings, stats["active_fraction"], stats["loss"], self.config.margin)
        if collapsed:
            self._warn(f"epoch {epoch}: embeddings are collapsing (all images map to nearly one point); "
                       "try a lower learning rate, --mining semi-hard or all, or a smaller --margin")
        row = epoch_row(epoch, phase, stats, (scores or Scores()).metrics(), step.learning_rate, collapsed)
        self.history.add(row)
        self.board.epoch(row)
        self.progress.epoch, self.progress.phase_epochs[phase] = epoch, self.progress.phase_epochs[phase] + 1
        judged = self.selection.judge(epoch, phase, scores, self.progress.left(self.config, phase), self.start.average_precision)
        self.progress.phase_done[phase] = self.progress.phase_done[phase] or judged.phase_over
        if judged.warning:
            self._warn(judged.warning)
        if judged.keep:
            self._save_model()
            if embeddings is not None and self.board.enabled:  # the projector shows the epoch model.keras holds
                names = [self.val.names[label] for label in self.val.labels]
                tensorboard.write_projector(self.run_dir / tensorboard.LOGS / "projector", embeddings, names, self.val.images)
        if judged.early_stop:
            self.events.message(judged.early_stop)
        self.checkpoints.save(self.nets.model, step.optimizer, self._state())
        self.write_history()
        self.events.result(epoch_line(row))

    def _state(self) -> TrainerState:
        """What a checkpoint keeps: every part's state."""
        return TrainerState(epoch=self.progress.epoch, phase_epochs=dict(self.progress.phase_epochs),
                            phase_done=dict(self.progress.phase_done), **self.selection.state(),
                            pixel_weight=self.start.pixel.weight, pixel_weight_scores=self.start.pixel.scores,
                            pixel_weight_chosen_by=self.start.pixel.chosen_by, rows=self.history.rows,
                            sampler_state=self.sampler.rng.bit_generator.state, warnings=self.warnings)

    def _save_model(self, name: str = rundir.MODEL_FILE) -> None:
        with atomic_path(self.run_dir / name, suffix=".keras") as temporary:
            self.nets.model.save(temporary)

    # ---- the end ------------------------------------------------------------------------
    def finish(self) -> tuple[str | None, RunSelection | None]:
        """After the last epoch: the one line comparing the kept model with the start, and config.json's `selection`."""
        line = self.selection.verdict([row["map_at_r"] for row in self.history.rows])
        if line is None:
            return None, None
        if self.selection.start_kept:
            self._warn(line)
        else:
            self.events.stage("model selection")
            self.events.result(line)
        return line, self.selection.record(line, self.start.pixel)

    def write_history(self) -> None:
        self.history.write(self.selection.start_metrics)

    def close(self) -> None:
        self.board.close()

