"""Defaults that depend on the data: how many identities there are to train on and to hold out.

Few training identities overfit fast: a head learns what separates *those* people and loses
what separates others. The rules (docs/train.md states them too):

- weight decay (AdamW, decoupled; kernels only, not biases or BatchNorm): 5e-2 with fewer than
  FEW_IDENTITIES training identities, 1e-2 otherwise;
- patience (epochs without a better validation MAP@R before a phase ends): 3 in the frozen
  phase; in the fine-tune phase 1 from scratch (stop as soon as it stops helping: an epoch
  there costs minutes) and 2 with pretrained weights. `--patience N` sets both phases;
- validation: when some but fewer than MIN_VAL_IDENTITIES identities are held out, MAP@R over so few
  people saturates (4 people: 0.97–1.00 whatever the model), so a share
  (`--val-image-fraction`, default VAL_IMAGE_FRACTION) of the images of every training identity
  with 3 or more images is held out too, never trained on, and scored in the same retrieval
  set: validation then ranks among all identities.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from siamcli.training.config import TrainConfig

FEW_IDENTITIES = 100
MIN_VAL_IDENTITIES = 10
VAL_IMAGE_FRACTION = 0.2
FROZEN_PATIENCE = 3


def adapt(config: TrainConfig, train_identities: int, val_identities: int) -> TrainConfig:
    """Fill the options left as None from the data's size (the result is what config.json records)."""
    few = train_identities < FEW_IDENTITIES
    weight_decay = config.weight_decay if config.weight_decay is not None else (5e-2 if few else 1e-2)
    patience = config.patience if config.patience is not None else FROZEN_PATIENCE
    if config.finetune_patience is not None:
        finetune_patience = config.finetune_patience
    elif config.patience is not None:
        finetune_patience = config.patience
    else:
        finetune_patience = 2 if config.pretrained else 1
    fraction = config.val_image_fraction
    if fraction is None:
        fraction = VAL_IMAGE_FRACTION if 0 < val_identities < MIN_VAL_IDENTITIES else 0.0
    return dataclasses.replace(
        config, weight_decay=weight_decay, patience=patience, finetune_patience=finetune_patience, val_image_fraction=fraction
    )


def held_out_images(labels: list[str], train_identities: set[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over `labels` (one per image, in load order): images of training identities held out.

    Of every training identity with 3 or more images, round(fraction × count) images (at least
    one, and never more than leave 2 to train on), chosen with `seed`.
    """
    mask = np.zeros(len(labels), bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng([seed, 12])
    positions: dict[str, list[int]] = {}
    for position, label in enumerate(labels):
        if label in train_identities:
            positions.setdefault(label, []).append(position)
    for label in sorted(positions):
        members = positions[label]
        if len(members) < 3:
            continue
        count = min(max(1, int(round(fraction * len(members)))), len(members) - 2)
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask
