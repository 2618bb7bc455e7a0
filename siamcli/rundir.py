"""The run directory: where a training run leaves its artifacts, and how later commands find it.

    <run>/model.keras    image in, unit-length embedding out (the epoch model selection keeps: docs/train.md)
    <run>/start.keras    the same network before any training step (epoch 0), for `evaluate`'s start column
    <run>/config.json    resolved options, library versions, what the data held (run_config.RunConfig)
    <run>/split.json     {"train": [...], "val": [...]} identity names (run_config.RunSplit)
    <run>/history.csv    one row per epoch
    <run>/loss.png       loss and validation curves, phase boundary marked
    <run>/checkpoints/   last complete epoch (weights and trainer state)
    <run>/logs/          TensorBoard: scalars per step and epoch, projector files (`tensorboard --logdir runs`)

`latest` (a symlink beside the run, so `runs/latest` for the default `runs/<timestamp>`) points
at the newest run; `index`, `query` and `evaluate` default to it.

--model also takes a word that names a model built without training (`imagenet`, `imagenet@96`,
`imagenet:W.weights.h5`: models/pretrained_run.py). Building it needs the models layer, which
this module may not import, so that module registers its builder here (register_named_model)
and find_run calls it: every caller of find_run accepts the word unchanged.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from siamcli.errors import UserError

DEFAULT_RUNS_ROOT = Path("runs")
LATEST = "latest"
MODEL_FILE = "model.keras"
START_MODEL_FILE = "start.keras"  # the start model (epoch 0); runs of earlier releases lack it
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
HISTORY_FILE = "history.csv"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
IMAGENET = "imagenet"  # --model imagenet[@SIZE][:WEIGHTS]: no training (models/pretrained_run.py)

# word → function that turns the whole --model value into a complete run directory (built once)
_NAMED_MODELS: dict[str, Callable[[str], Path]] = {}


def register_named_model(word: str, materialise: Callable[[str], Path]) -> None:
    _NAMED_MODELS[word] = materialise


def named_model_word(model: str) -> str | None:
    """'imagenet@96:w.h5' → 'imagenet'; None for a value that is not such a word (a path)."""
    word = model.split(":", 1)[0].split("@", 1)[0].strip().lower()
    return word if word == IMAGENET else None


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path
    model: Path

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def split(self) -> Path:
        return self.run_dir / SPLIT_FILE

    @property
    def start_model(self) -> Path:
        return self.run_dir / START_MODEL_FILE


def new_run_dir(out: str | None, force: bool) -> Path:
    """Create the run directory; an existing, non-empty one is only replaced with force."""
    run_dir = Path(out) if out else DEFAULT_RUNS_ROOT / time.strftime("%Y%m%d-%H%M%S")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; give a folder for the run")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise UserError(f"{run_dir} already holds a run; choose another --out or pass --force to replace it")
        shutil.rmtree(run_dir)
    try:
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {run_dir}: {exc.strerror}; choose a writable --out") from exc
    return run_dir


def point_latest_at(run_dir: Path) -> Path:
    """Atomically make `<parent>/latest` a relative symlink to `run_dir`."""
    link = run_dir.parent / LATEST
    temporary = run_dir.parent / f".{LATEST}.{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(run_dir.name, temporary)
    os.replace(temporary, link)
    return link


def find_run(model: str | None) -> RunPaths:
    """Resolve --model: a run directory, a model.keras file, a named model (`imagenet…`, built into
    a cached run directory on first use; an existing path of that name wins), or (None) runs/latest."""
    target = Path(model) if model else DEFAULT_RUNS_ROOT / LATEST
    word = named_model_word(model) if model else None
    if word and not target.exists():
        if word not in _NAMED_MODELS:  # a caller that skipped the models layer's registration
            raise UserError(f"--model {model} is built by siamcli.models.pretrained_run; call its register() first")
        target = _NAMED_MODELS[word](model)
    if not target.exists():
        if model is None:
            raise UserError("no trained model found at runs/latest; run `siamcli train DATA_DIR` first or pass --model RUN_DIR")
        raise UserError(f"--model {model} not found; give a run directory or its model.keras")
    if target.is_file():
        return RunPaths(run_dir=target.resolve().parent, model=target.resolve())
    run_dir = target.resolve()
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"{run_dir} has no {MODEL_FILE}; is it a finished siamcli run?")
    return RunPaths(run_dir=run_dir, model=model_path)
