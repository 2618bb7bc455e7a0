"""Training options as a typed, frozen dataclass, saved with every run (config.json).

Options left as None are filled by `resolve()` from the regime: fine-tuning ImageNet (or
other pretrained) weights wants small learning rates, frozen BatchNorm and only the top of the
network unfrozen; training from scratch (`--weights none`) wants the whole network trainable,
BatchNorm learning its statistics, and larger learning rates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from siamcli.choices import LrSchedule, Mining, Pooling, Precision, Strategy
from siamcli.errors import UserError
from siamcli.models import resnet50
from siamcli.run_config import fits, read_config


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


# ImageNet features are strong and general: the whole ResNet50, pooled globally; fine-tune the
# last stage gently with BatchNorm frozen.
PRETRAINED = RegimeDefaults(
    *resnet50.PRETRAINED_CUT, dropout=0.0, margin=0.2,
    finetune_from="conv5_block1_out", lr=1e-3, finetune_lr=1e-5, train_batchnorm=False,
)
# Random weights: measured on att_faces (docs/training.md), a shallower cut with coarse spatial
# pooling and a regularised head beats the full network; the whole cut network fine-tunes.
FROM_SCRATCH = RegimeDefaults(
    *resnet50.FROM_SCRATCH_CUT, dropout=0.3, margin=0.5,
    finetune_from="all", lr=3e-4, finetune_lr=1e-4, train_batchnorm=True,
)
MIN_STEPS_PER_EPOCH = 100  # P×K sampling has no natural epoch; tiny datasets still get real epochs


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str  # one sub-folder per identity
    image_size: int = 224  # side of the square the model resizes to
    embedding_dim: int = 256  # length of the L2-normalised embedding
    weights: str = "imagenet"  # imagenet | none | PATH to a ResNet50 weights file
    frozen_epochs: int = 5  # phase 1: backbone frozen, head trained on cached features
    finetune_epochs: int = 5  # phase 2: backbone trainable from finetune_from on
    finetune_from: str | None = None  # ResNet50 layer name, or "all"; None → regime default
    feature_layer: str | None = None  # ResNet50 block output the backbone ends at; None → regime default
    pooling: str | None = None  # avg | grid2 | grid3 | grid4; None → regime default
    dropout: float | None = None  # head dropout on the features; None → regime default
    batch_size: int = 32  # global batch (P identities × K images), split across replicas
    images_per_identity: int = 4  # K of the P×K batches
    steps_per_epoch: int | None = None  # None → one pass over the training images, at least 100 batches
    margin: float | None = None  # triplet margin on squared distances between unit vectors (0…4); None → regime default
    mining: str = "all"  # in-batch triplet selection: all | hard | semi-hard | random
    lr: float | None = None  # phase-1 learning rate; None → regime default
    finetune_lr: float | None = None  # phase-2 learning rate; None → regime default
    val_fraction: float = 0.2  # share of identities held out for validation
    seed: int = 0  # split, sampling, augmentation and initialisation
    strategy: str = "auto"  # auto | default | mirrored | multi-worker
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16
    augment: bool = True  # flips, shifts, brightness in the fine-tune phase
    patience: int | None = None  # end a phase after this many epochs without a better val MAP@R; 0 = never; None → by data (training/adaptive.py)
    lr_schedule: str = "constant"  # constant | cosine (to a tenth over each phase)
    finetune_patience: int | None = None  # patience of the fine-tune phase; None → --patience if given, else by regime
    weight_decay: float | None = None  # AdamW decoupled weight decay on kernels; None → by number of training identities
    views: int = 8  # frozen phase: cached backbone features of this many views per image (1 clean + augmented ones)
    val_image_fraction: float | None = None  # share of each training identity's images also held out; None → by held-out identities

    def validate(self) -> "TrainConfig":
        checks = [
            (self.image_size >= 32, f"--image-size must be at least 32 (ResNet50's smallest input), got {self.image_size}"),
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
        values = {}
        for spec in dataclasses.fields(cls):
            if spec.name not in data:
                continue
            value = data[spec.name]
            if not fits(value, str(spec.type)):
                raise UserError(f"{source}: {spec.name} is {value!r}, expected {spec.type}")
            values[spec.name] = value
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
