"""Choosing the tf.distribute strategy, and who writes the run directory."""

from __future__ import annotations

import json
import os

from siamcli.errors import UserError
from siamcli.tf_runtime import import_tensorflow


def choose_strategy(name: str):
    """auto: MirroredStrategy when more than one GPU is visible, else the default strategy.

    mirrored: MirroredStrategy over every visible GPU (or CPU logical devices, as the tests use).
    multi-worker: MultiWorkerMirroredStrategy configured from the TF_CONFIG environment variable;
    it must be created before TensorFlow runs anything else, so the trainer calls this first.
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
        cluster_config()  # validates TF_CONFIG with a clear message
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r}; use auto, default, mirrored or multi-worker")


def cluster_config() -> dict:
    """TF_CONFIG, parsed and checked: {"cluster": {"worker": [...], ...}, "task": {"type", "index"}}."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable (cluster and task); see the README")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON ({exc.msg}); see the README for its form") from exc
    task = config.get("task", {}) if isinstance(config, dict) else {}
    cluster = config.get("cluster", {}) if isinstance(config, dict) else {}
    if not isinstance(cluster, dict) or not cluster.get("worker") or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise UserError('TF_CONFIG must name the cluster\'s workers and this task, e.g. '
                        '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    return config


def is_chief(strategy_name: str) -> bool:
    """The chief writes the run; other workers write to a temporary directory (TF's convention:
    the "chief" task if the cluster has one, else worker 0)."""
    if strategy_name != "multi-worker":
        return True
    config = cluster_config()
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def worker_count(strategy_name: str) -> int:
    if strategy_name != "multi-worker":
        return 1
    cluster = cluster_config()["cluster"]
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))
