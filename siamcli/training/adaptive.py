"""Defaults that depend on the data: how many identities there are to train on and to hold out.

Few training identities overfit fast: a head learns what separates *those* people and loses
what separates others. The rules, whose numbers are config.py's BY_DATA table and the regime
table (docs/train.md states them too):

- weight decay (AdamW, decoupled; kernels only, not biases or BatchNorm): `weight_decay_few`
  with fewer than `few_identities` training identities, `weight_decay` otherwise;
- patience (epochs without a better validation MAP@R before a phase ends): `frozen_patience` in
  the frozen phase; in the fine-tune phase the regime's `finetune_patience` (from scratch: stop
  as soon as it stops helping, an epoch there costs minutes). `--patience N` sets both phases;
- validation: when some but fewer than `min_val_identities` identities are held out, MAP@R over
  so few people saturates (4 people: 0.97–1.00 whatever the model), so a share
  (`--val-image-fraction`, default `val_image_fraction`) of the images of every training
  identity with 3 or more images is held out too, never trained on, and scored in the same
  retrieval set: validation then ranks among all identities.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from siamcli.training.config import BY_DATA, TrainConfig


def adapt(config: TrainConfig, train_identities: int, val_identities: int) -> TrainConfig:
    """Fill the options left as None from the data's size (the result is what config.json records)."""
    few = train_identities < BY_DATA.few_identities
    weight_decay = config.weight_decay if config.weight_decay is not None else (BY_DATA.weight_decay_few if few else BY_DATA.weight_decay)
    patience = config.patience if config.patience is not None else BY_DATA.frozen_patience
    if config.finetune_patience is not None:
        finetune_patience = config.finetune_patience
    elif config.patience is not None:
        finetune_patience = config.patience
    else:
        finetune_patience = config.regime.finetune_patience
    fraction = config.val_image_fraction
    if fraction is None:
        fraction = BY_DATA.val_image_fraction if too_few_to_measure(val_identities) else 0.0
    return dataclasses.replace(
        config, weight_decay=weight_decay, patience=patience, finetune_patience=finetune_patience, val_image_fraction=fraction
    )


def too_few_to_measure(held_out_identities: int) -> bool:
    """Some identities are held out, but too few for their MAP@R to measure (folds then choose)."""
    return 0 < held_out_identities < BY_DATA.min_val_identities


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
