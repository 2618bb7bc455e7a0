"""Checkpoints: everything needed to continue a run after its last complete epoch.

    checkpoints/epoch-0007/model.weights.h5   all model weights
    checkpoints/epoch-0007/optimizer.npz      the current phase's optimiser variables (Adam moments, step)
    checkpoints/epoch-0007/state.json         epoch, phase, best epoch, history rows, sampler state
    checkpoints/last.json                     {"checkpoint": "epoch-0007"}: the newest complete one

Each epoch's checkpoint is built as a directory under a temporary name and renamed into
place; only then is `last.json` (atomically) pointed at it and the older one removed. A kill
at any moment leaves `last.json` naming a complete checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from siamcli.atomic import atomic_directory, write_json
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.rundir import read_json

POINTER = "last.json"


@dataclass
class TrainerState:
    epoch: int = 0  # complete epochs so far
    phase_epochs: dict = field(default_factory=lambda: {"frozen": 0, "finetune": 0})
    phase_done: dict = field(default_factory=lambda: {"frozen": False, "finetune": False})  # early-stopped or complete
    best_epoch: int | None = None
    best_score: float = float("-inf")
    best_metrics: dict = field(default_factory=dict)
    epochs_since_best: int = 0
    rows: list = field(default_factory=list)  # history.csv rows so far
    sampler_state: dict | None = None  # numpy bit-generator state of the P×K sampler
    warnings: list = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["best_score"] = None if self.best_score == float("-inf") else self.best_score
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrainerState":
        state = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if state.best_score is None:
            state.best_score = float("-inf")
        return state


def save(checkpoints: Path, model, optimizer, state: TrainerState) -> Path:
    name = f"epoch-{state.epoch:04d}"
    with atomic_directory(checkpoints / name) as building:
        model.save_weights(building / "model.weights.h5")
        arrays = {f"v{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
        with open(building / "optimizer.npz", "wb") as handle:
            np.savez(handle, **arrays)
        write_json(building / "state.json", state.to_json())
    write_json(checkpoints / POINTER, {"checkpoint": name})
    for old in checkpoints.glob("epoch-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return checkpoints / name


def latest(checkpoints: Path) -> Path:
    pointer = checkpoints / POINTER
    if not pointer.is_file():
        raise UserError(f"{checkpoints.parent} has no complete checkpoint to resume from; start a new run instead")
    name = read_json(pointer, "checkpoint pointer").get("checkpoint")
    directory = checkpoints / str(name)
    if not isinstance(name, str) or not (directory / "state.json").is_file():
        raise CorruptArtifactError(f"checkpoint pointer {pointer} names a missing checkpoint; the run's checkpoints are damaged")
    return directory


def load_state(directory: Path) -> TrainerState:
    return TrainerState.from_json(read_json(directory / "state.json", "checkpoint state"))


def restore(directory: Path, model, optimizer=None) -> None:
    """Load weights into `model` and, when given, the saved variables into `optimizer` (built)."""
    try:
        model.load_weights(directory / "model.weights.h5")
    except Exception as exc:
        raise CorruptArtifactError(f"cannot load checkpoint weights from {directory} ({exc}); the checkpoint is damaged") from exc
    if optimizer is None:
        return
    with np.load(directory / "optimizer.npz") as saved:
        values = [saved[key] for key in sorted(saved.files)]
    variables = optimizer.variables
    if len(values) != len(variables) or any(tuple(v.shape) != a.shape for v, a in zip(variables, values)):
        raise CorruptArtifactError(f"optimizer state in {directory} does not match the model; the checkpoint is damaged")
    for variable, value in zip(variables, values):
        variable.assign(value)
