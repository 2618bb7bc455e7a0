"""Training options, declared once: a typed, frozen dataclass saved with every run (config.json),
whose fields are also `siamcli train`'s options (cli/train_cmd.py builds them from these
fields: name, type, default, help) and the notebook API's keywords.

Options left as None are filled by `resolve()` from the regime: fine-tuning ImageNet (or
other pretrained) weights wants small learning rates, frozen BatchNorm and only the top of the
network unfrozen; training from scratch (`--weights none`) wants the whole network trainable,
BatchNorm learning its statistics, and larger learning rates. Others are filled from the data's
size (training/adaptive.py, by the BY_DATA table). A help text states such a default by reading
its table, never by copying the number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from siamcli.choices import Choice, LrSchedule, Mining, Pooling, Precision, Strategy
from siamcli.errors import UserError
from siamcli.models import resnet50
from siamcli.run_config import read_config, typed_fields


@dataclass(frozen=True)
class RegimeDefaults:
    feature_layer: str  # where the backbone ends
    pooling: str  # how its feature map becomes a vector
    dropout: float  # on the features, in the head
    margin: float
    finetune_from: str
    lr: float
    finetune_lr: float
    train_batchnorm: bool
    finetune_patience: int  # unless --patience or --finetune-patience says otherwise


# ImageNet features are strong and general: the whole ResNet50, pooled globally; fine-tune the
# last stage gently with BatchNorm frozen.
PRETRAINED = RegimeDefaults(
    *resnet50.PRETRAINED_CUT, dropout=0.0, margin=0.2,
    finetune_from="conv5_block1_out", lr=1e-3, finetune_lr=1e-5, train_batchnorm=False, finetune_patience=2,
)
# Random weights: measured on att_faces (docs/training.md), a shallower cut with coarse spatial
# pooling and a regularised head beats the full network; the whole cut network fine-tunes. An
# epoch of fine-tuning from scratch costs minutes: stop as soon as it stops helping.
FROM_SCRATCH = RegimeDefaults(
    *resnet50.FROM_SCRATCH_CUT, dropout=0.3, margin=0.5,
    finetune_from=resnet50.WHOLE_NETWORK, lr=3e-4, finetune_lr=1e-4, train_batchnorm=True, finetune_patience=1,
)


@dataclass(frozen=True)
class DataDefaults:
    """Defaults that depend on the data's size (training/adaptive.py applies them)."""

    few_identities: int = 100  # fewer training identities than this overfit fast: stronger weight decay
    weight_decay_few: float = 5e-2
    weight_decay: float = 1e-2
    frozen_patience: int = 3
    min_val_identities: int = 10  # fewer held-out identities cannot measure: folds, and held-out images too
    val_image_fraction: float = 0.2


BY_DATA = DataDefaults()
FROZEN, FINETUNE = "frozen", "finetune"  # the phases: --frozen-epochs, then --finetune-epochs
PHASES = (FROZEN, FINETUNE)
MIN_STEPS_PER_EPOCH = 100  # P×K sampling has no natural epoch; tiny datasets still get real epochs
COSINE_FLOOR = 0.1  # --lr-schedule cosine decays each phase's learning rate to this share of it


def shown(value) -> str:
    """A default as the help and docs write it: 0.2, 5e-2, 1e-5, conv5_block1_out."""
    if not isinstance(value, float):
        return str(value)
    if value and abs(value) < 0.1:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


def _by_regime(name: str) -> str:
    """"default: X pretrained; Y from scratch", read from the regime table."""
    values = [getattr(regime, name) for regime in (PRETRAINED, FROM_SCRATCH)]
    return f"default: {shown(values[0])} pretrained; {shown(values[1])} from scratch"


def option(default, help: str, choices: type[Choice] | None = None):
    """A TrainConfig field that is also a `siamcli train` option: its help text and, for a
    closed set of values, the Choice enum the CLI offers (the field itself holds the plain string)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = field(metadata={"help": "Folder with one sub-folder of images per identity."})
    image_size: int = option(224, f"Side of the square images the network sees (≥ {resnet50.MIN_IMAGE_SIZE}).")
    embedding_dim: int = option(256, "Length of the L2-normalised embedding.")
    weights: str = option("imagenet", "Backbone start: imagenet, none (from scratch), or PATH to a ResNet50 weights file.")
    frozen_epochs: int = option(5, "Epochs with the backbone frozen (head trained on cached features).")
    finetune_epochs: int = option(5, "Epochs with the backbone trainable from --finetune-from on.")
    finetune_from: str | None = option(None, f"First ResNet50 layer to fine-tune, or '{resnet50.WHOLE_NETWORK}' ({_by_regime('finetune_from')}).")
    feature_layer: str | None = option(None, f"ResNet50 block output the backbone ends at ({_by_regime('feature_layer')}).")
    pooling: str | None = option(None, f"avg (global average) or gridN (an N×N grid of averages) ({_by_regime('pooling')}).", Pooling)
    dropout: float | None = option(None, f"Dropout on the features in the head ({_by_regime('dropout')}).")
    batch_size: int = option(32, "Global batch: P identities × K images, split across replicas.")
    images_per_identity: int = option(4, "K: images of each identity in a batch.")
    steps_per_epoch: int | None = option(
        None, f"Batches per epoch (default: one pass over the training images, at least {MIN_STEPS_PER_EPOCH}).")
    margin: float | None = option(
        None, f"Triplet margin on squared distances between unit vectors, 0–4 ({_by_regime('margin')}).")
    mining: str = option(Mining.ALL.value, "In-batch triplet selection: every violating triplet, batch-hard, semi-hard (FaceNet) "
                         "or one random negative.", Mining)
    lr: float | None = option(None, f"Learning rate of the frozen phase ({_by_regime('lr')}).")
    finetune_lr: float | None = option(None, f"Learning rate of fine-tuning ({_by_regime('finetune_lr')}).")
    val_fraction: float = option(0.2, "Share of identities held out for validation (never trained on).")
    seed: int = option(0, "Seed for the split, sampling, augmentation and initialisation.")
    strategy: str = option(Strategy.AUTO.value, "tf.distribute strategy (auto: mirrored when more than one GPU is visible; "
                           "multi-worker: from TF_CONFIG).", Strategy)
    precision: str = option(Precision.FLOAT32.value, "Compute precision (the loss is always float32).", Precision)
    augment: bool = option(True, "Flip/shift/zoom/brightness augmentation: cached augmented views in the frozen phase, "
                           "augmented images when fine-tuning.")
    patience: int | None = option(
        None, "End a phase after this many epochs without a better validation MAP@R (0: never; default: "
        f"{BY_DATA.frozen_patience} frozen, and fine-tune {FROM_SCRATCH.finetune_patience} from scratch, "
        f"{PRETRAINED.finetune_patience} pretrained).")
    lr_schedule: str = option(LrSchedule.CONSTANT.value,
                              f"constant, or cosine (decays to {COSINE_FLOOR:g}× the learning rate over each phase).", LrSchedule)
    finetune_patience: int | None = option(
        None, f"Patience of the fine-tune phase alone (default: --patience if given, else {FROM_SCRATCH.finetune_patience} "
        f"from scratch, {PRETRAINED.finetune_patience} pretrained).")
    weight_decay: float | None = option(
        None, f"AdamW weight decay on kernels (default: {shown(BY_DATA.weight_decay_few)} with fewer than "
        f"{BY_DATA.few_identities} training identities, else {shown(BY_DATA.weight_decay)}).")
    views: int = option(8, "Frozen phase: cache backbone features of this many views of each image (the image and augmented copies).")
    val_image_fraction: float | None = option(
        None, f"Also hold out this share of each training identity's images for validation (default: "
        f"{shown(BY_DATA.val_image_fraction)} when fewer than {BY_DATA.min_val_identities} identities are held out, else 0).")

    def validate(self) -> "TrainConfig":
        checks = [
            (self.image_size >= resnet50.MIN_IMAGE_SIZE,
             f"--image-size must be at least {resnet50.MIN_IMAGE_SIZE} (ResNet50's smallest input), got {self.image_size}"),
            (self.embedding_dim >= 2, f"--embedding-dim must be at least 2, got {self.embedding_dim}"),
            (self.frozen_epochs >= 0, f"--frozen-epochs must be 0 or more, got {self.frozen_epochs}"),
            (self.finetune_epochs >= 0, f"--finetune-epochs must be 0 or more, got {self.finetune_epochs}"),
            (self.frozen_epochs + self.finetune_epochs > 0, "--frozen-epochs and --finetune-epochs are both 0: nothing to train"),
            (self.images_per_identity >= 2, f"--images-per-identity must be at least 2, got {self.images_per_identity}"),
            (self.batch_size >= 2 * self.images_per_identity,
             f"--batch-size must hold at least 2 identities × {self.images_per_identity} images, got {self.batch_size}"),
            (self.batch_size % self.images_per_identity == 0,
             f"--batch-size ({self.batch_size}) must be a multiple of --images-per-identity ({self.images_per_identity})"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}"),
            (self.margin is None or self.margin > 0, f"--margin must be positive, got {self.margin}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.finetune_lr is None or self.finetune_lr > 0, f"--finetune-lr must be positive, got {self.finetune_lr}"),
            (0.0 < self.val_fraction < 1.0, f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}"),
            (self.patience is None or self.patience >= 0, f"--patience must be 0 or more, got {self.patience}"),
            (self.finetune_patience is None or self.finetune_patience >= 0,
             f"--finetune-patience must be 0 or more, got {self.finetune_patience}"),
            (self.weight_decay is None or self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (self.views >= 1, f"--views must be at least 1, got {self.views}"),
            (self.val_image_fraction is None or 0.0 <= self.val_image_fraction < 1.0,
             f"--val-image-fraction must be in [0, 1), got {self.val_image_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        Strategy.check(self.strategy, "--strategy")
        Mining.check(self.mining, "--mining")
        LrSchedule.check(self.lr_schedule, "--lr-schedule")
        Precision.check(self.precision, "--precision")
        self._validate_layers()
        return self

    def _validate_layers(self) -> None:
        resolved = self.resolve()
        blocks = resnet50.block_outputs()
        if resolved.feature_layer not in blocks:
            raise UserError(f"--feature-layer {resolved.feature_layer!r} is not a ResNet50 block output; use one of {', '.join(blocks)}")
        Pooling.check(resolved.pooling, "--pooling")
        names = resnet50.layer_names()
        last = names.index(resolved.feature_layer)
        if resolved.finetune_from != resnet50.WHOLE_NETWORK and (resolved.finetune_from not in names or names.index(resolved.finetune_from) > last):
            raise UserError(
                f"--finetune-from {resolved.finetune_from!r} is not a ResNet50 layer at or before --feature-layer "
                f"{resolved.feature_layer}; use '{resnet50.WHOLE_NETWORK}' or a block output such as "
                f"{', '.join([b for b in blocks if names.index(b) <= last][-4:])}"
            )

    @property
    def pretrained(self) -> bool:
        return self.weights.strip().lower() != "none"

    @property
    def regime(self) -> RegimeDefaults:
        return PRETRAINED if self.pretrained else FROM_SCRATCH

    def resolve(self) -> "TrainConfig":
        """Fill regime-dependent options left as None; the result is what the run records."""
        regime = self.regime
        return dataclasses.replace(
            self,
            data_dir=str(Path(self.data_dir).resolve()) if self.data_dir else self.data_dir,  # valid from any folder
            finetune_from=self.finetune_from or regime.finetune_from,
            feature_layer=self.feature_layer or regime.feature_layer,
            pooling=self.pooling or regime.pooling,
            dropout=self.dropout if self.dropout is not None else regime.dropout,
            margin=self.margin if self.margin is not None else regime.margin,
            lr=self.lr if self.lr is not None else regime.lr,
            finetune_lr=self.finetune_lr if self.finetune_lr is not None else regime.finetune_lr,
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "config.json") -> "TrainConfig":
        """The options recorded in a run's config.json (other keys: versions, counts, are ignored).

        A value of the wrong type is a UserError naming it: the file may have been edited by hand.
        """
        if not isinstance(data, dict):
            raise UserError(f"{source} does not hold an object of training options")
        values = typed_fields(cls, data, source, remedy="correct the value in that file")
        if "data_dir" not in values:
            raise UserError(f"{source} does not name the training data (data_dir)")
        return cls(**values)

    @classmethod
    def from_run(cls, path: str | Path) -> "TrainConfig":
        """The resolved options of an earlier run (its directory or its config.json), to train again.

        The data folder is found as `evaluate` and `resume` find it: the recorded absolute path,
        else the same folder seen from the run (`data_dir_from_run`), when run and data moved.
        """
        from siamcli import rundir

        path = Path(path)
        file = path / rundir.CONFIG_FILE if path.is_dir() else path
        if not file.is_file():
            raise UserError(f"--config {path} not found; give a run directory or its {rundir.CONFIG_FILE}")
        recorded = read_config(file)
        config = cls.from_json(recorded.options, str(file))
        found = recorded.find_data(file.parent)
        return dataclasses.replace(config, data_dir=str(found)) if found is not None else config
