"""Choosing the tf.distribute strategy."""

from __future__ import annotations

import json
import os

from siamcli.errors import UserError
from siamcli.tf_runtime import import_tensorflow


def choose_strategy(name: str):
    """auto: MirroredStrategy when more than one GPU is visible, else the default strategy.

    mirrored: MirroredStrategy over every visible GPU (or CPU logical devices, as the tests use).
    multi-worker: MultiWorkerMirroredStrategy configured from the TF_CONFIG environment variable.
    """
    tf = import_tensorflow()
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable (cluster and task); see the README")
        try:
            json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"TF_CONFIG is not valid JSON ({exc.msg}); see the README for its form") from exc
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r}; use auto, default, mirrored or multi-worker")
