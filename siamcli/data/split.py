"""Identity-level train/validation split: held-out identities are never seen in training."""

from __future__ import annotations

from collections import Counter

import numpy as np

from siamcli.errors import UserError
from siamcli.run_config import RunSplit as IdentitySplit  # the split is what split.json records


def split_identities(counts: Counter, val_fraction: float, seed: int) -> IdentitySplit:
    """Hold out `val_fraction` of the identities, chosen with `seed`.

    Only identities with two or more images can be held out (a validation query needs a
    same-identity partner), and at least two usable identities stay for training.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    identities = sorted(counts)
    usable = [name for name in identities if counts[name] >= 2]
    if len(usable) < 2:
        raise UserError(
            f"need at least 2 identities with 2 or more images to train, found {len(usable)}; "
            "add images or identity folders"
        )
    wanted = max(1, int(round(val_fraction * len(identities))))
    # Keep two identities that can anchor triplets for training.
    n_val = min(wanted, len(usable) - 2)
    rng = np.random.default_rng(seed)
    val = sorted(rng.choice(usable, size=n_val, replace=False).tolist()) if n_val > 0 else []
    held = set(val)
    train = [name for name in identities if name not in held]
    return IdentitySplit(train=train, val=val)
