"""Checkpoints: everything needed to continue a run after its last complete epoch.

    checkpoints/checkpoint                  the CheckpointManager's pointer: model_checkpoint_path: "ckpt-7"
    checkpoints/ckpt-7.index                TensorFlow checkpoint of epoch 7 (`tf.train.Checkpoint`):
    checkpoints/ckpt-7.data-00000-of-00001    every model weight and the current phase's optimiser
                                              variables (Adam moments, step), each under its name
    checkpoints/ckpt-7.state.json           epoch, phase counts, kept epoch, history rows, sampler state

The checkpoint number is the epoch. Variables are stored by name, not by position: a model
weight under `model/<Keras variable path>` (`model/conv1_conv/kernel`; a Dropout's random-seed
state under its layer's name, `model/dropout/seed_generator_state`), an optimiser variable
under `optimizer/<its path without the optimiser's own name>` (`optimizer/projection_kernel_momentum`;
a LossScaleOptimizer's inner optimiser under `optimizer/inner/`), so the optimiser's automatic
name (`adam`, `adam_1`, ...) and the order in which variables were created do not matter.
`tf.train.list_variables(prefix)` lists them. (A `tf.train.Checkpoint(model=..., optimizer=...)`
of the Keras 3 objects themselves would key them by list position: `model/_operations/2/...`,
`optimizer/_variables/7/...`.)

Order of a save, so that a kill at any moment leaves the pointer naming a complete pair:
`ckpt-N.state.json` is written first (atomically); then the CheckpointManager writes the
TensorFlow files, which are fsynced before the manager atomically rewrites `checkpoint` to name
`ckpt-N`; only then are the previous epoch's files and leftovers of killed saves removed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from siamcli.atomic import write_json
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.jsonio import read_json
from siamcli.rundir import CHECKPOINTS

NAME = "ckpt"  # checkpoint files are <NAME>-<epoch>.*
POINTER = "checkpoint"  # the CheckpointManager's (TensorFlow's) pointer file
STATE_SUFFIX = ".state.json"


@dataclass
class TrainerState:
    epoch: int = 0  # complete epochs so far
    phase_epochs: dict = field(default_factory=lambda: {"frozen": 0, "finetune": 0})
    phase_done: dict = field(default_factory=lambda: {"frozen": False, "finetune": False})  # early-stopped or complete
    best_epoch: int | None = None
    best_score: float = float("-inf")
    best_metrics: dict = field(default_factory=dict)
    start_metrics: dict = field(default_factory=dict)  # the start model's validation scores ("epoch 0")
    fold_curve: list = field(default_factory=list)  # cross-validated MAP@R after 0, 1, … frozen epochs (training/folds.py)
    pixel_weight: float = 0.0  # the start model's share of pixels in the distance (training/start_model.py)
    pixel_weight_scores: dict = field(default_factory=dict)  # candidate weight (as text) → its start's validation MAP@R
    pixel_weight_chosen_by: str = ""  # "identity folds", "validation" or "default"
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


class Checkpoints:
    """A run's checkpoints/ folder: one save after every epoch; a resumed run's optimiser read back.

    `resumed_from`: the checkpoint (`.../ckpt-N`) a resumed run continues from, else None.
    """

    def __init__(self, run_dir: Path, resumed_from: Path | None):
        self.directory = Path(run_dir) / CHECKPOINTS
        self.resumed_from = resumed_from

    def save(self, model, optimizer, state: TrainerState) -> Path:
        return save(self.directory, model, optimizer, state)

    def restore_optimizer(self, model, optimizer, phase: str, last_phase: str | None, phase_epochs: int) -> None:
        """Read `optimizer` (and `model`) back when resumed inside `phase` (the checkpoint's epoch
        was one of its `phase_epochs`): only such a checkpoint holds this phase's optimiser."""
        if self.resumed_from is not None and last_phase == phase and phase_epochs:
            restore(self.resumed_from, model, optimizer)


def _tf():
    from siamcli.tf_runtime import import_tensorflow

    return import_tensorflow()


def named_variables(model, optimizer=None) -> dict:
    """{name: variable} for `model`'s variables and, when given, `optimizer`'s (built)."""
    named: dict = {}

    def add(name: str, variable) -> None:
        if name in named:
            raise ValueError(f"two variables would be checkpointed as {name}")
        named[name] = variable

    seeds = _seed_state_names(model)
    for variable in model.variables:
        add(f"model/{seeds.get(id(variable), variable.path)}", variable)
    if optimizer is not None:
        roles = {optimizer.name: "optimizer"}
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is not None:
            roles[inner.name] = "optimizer/inner"
        for variable in optimizer.variables:
            owner, _, rest = variable.path.partition("/")
            add(f"{roles.get(owner, 'optimizer/' + owner)}/{rest}", variable)
    return named


def _seed_state_names(model) -> dict:
    """{id(state): name} for random-seed states (Dropout's), named after the layer holding them.

    Their own path starts with the SeedGenerator's automatic name (`seed_generator_3/...`), a
    process-wide counter that a resumed run need not reach in the same way.
    """
    names: dict = {}

    def walk(layer) -> None:
        for inner in getattr(layer, "layers", []):  # innermost layers claim their states first
            walk(inner)
        weights = {id(v) for v in layer.weights}
        states = [v for v in layer.variables if id(v) not in weights and id(v) not in names]
        for index, state in enumerate(states):
            names[id(state)] = f"{layer.name}/seed_generator{f'_{index}' if index else ''}_state"

    walk(model)
    return names


def _tf_checkpoint(named: dict):
    """A tf.train.Checkpoint whose object graph is the names' path components (nested dicts)."""
    tree: dict = {}
    for name, variable in named.items():
        *parents, leaf = name.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = variable
    return _tf().train.Checkpoint(**tree)


def _prefix(checkpoints: Path, epoch: int) -> Path:
    return checkpoints / f"{NAME}-{epoch}"


def _state_file(prefix: Path) -> Path:
    return prefix.with_name(prefix.name + STATE_SUFFIX)


def save(checkpoints: Path, model, optimizer, state: TrainerState) -> Path:
    """Checkpoint epoch `state.epoch` in `checkpoints`; returns its prefix (`.../ckpt-N`)."""
    tf = _tf()
    prefix = _prefix(checkpoints, state.epoch)
    write_json(_state_file(prefix), state.to_json())
    manager = tf.train.CheckpointManager(
        _tf_checkpoint(named_variables(model, optimizer)), str(checkpoints), max_to_keep=1, checkpoint_name=NAME
    )
    # Runs before the manager's own callback, which points `checkpoint` at the new files.
    options = tf.train.CheckpointOptions(experimental_write_callbacks=[_fsync_checkpoint])
    manager.save(checkpoint_number=state.epoch, options=options)
    _remove_all_but(checkpoints, prefix)
    return prefix


def _fsync_checkpoint(save_path: str) -> None:
    directory = Path(save_path).parent
    for path in directory.glob(Path(save_path).name + ".*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _remove_all_but(checkpoints: Path, keep: Path) -> None:
    """Delete other epochs' files and what killed saves left (`ckpt-8_temp/`, `.ckpt-8.state.json.*.tmp`)."""
    for path in checkpoints.iterdir():
        if path.name.lstrip(".").startswith(f"{NAME}-") and not path.name.startswith(keep.name + "."):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def latest(checkpoints: Path) -> Path:
    """The prefix of the newest complete checkpoint (`.../ckpt-N`)."""
    pointer = checkpoints / POINTER
    if not pointer.is_file() and (checkpoints / "last.json").is_file():
        raise UserError(f"{checkpoints.parent} was checkpointed by an older siamcli (checkpoints/last.json); resume it with that version")
    if not pointer.is_file():
        raise UserError(f"{checkpoints.parent} has no complete checkpoint to resume from; start a new run instead")
    prefix = latest_prefix(checkpoints)
    if prefix is None or not Path(str(prefix) + ".index").is_file() or not _state_file(prefix).is_file():
        raise CorruptArtifactError(f"checkpoint pointer {pointer} names a missing checkpoint; the run's checkpoints are damaged")
    return prefix


def latest_prefix(checkpoints: Path) -> Path | None:
    """What the pointer names (`.../ckpt-N`), or None: no pointer, or one that cannot be read."""
    try:
        found = _tf().train.get_checkpoint_state(str(checkpoints))
    except Exception:  # a damaged pointer file
        return None
    if found is None or not found.model_checkpoint_path:
        return None
    return checkpoints / Path(found.model_checkpoint_path).name


def latest_epoch(checkpoints: Path) -> int | None:
    """The epoch of the newest complete checkpoint, or None when there is none."""
    prefix = latest_prefix(checkpoints)
    if prefix is None:
        return None
    try:
        return int(prefix.name.rpartition("-")[2])
    except ValueError:
        return None


def load_state(prefix: Path) -> TrainerState:
    state = TrainerState.from_json(read_json(_state_file(prefix), "checkpoint state"))
    if f"{NAME}-{state.epoch}" != prefix.name:
        raise CorruptArtifactError(
            f"{_state_file(prefix)} describes epoch {state.epoch}, not {prefix.name}; the run's checkpoints are damaged"
        )
    return state


def restore(prefix: Path, model, optimizer=None) -> None:
    """Load every weight of `model` and, when given, of `optimizer` (built) from `prefix`, by name."""
    try:
        status = _tf_checkpoint(named_variables(model, optimizer)).read(str(prefix))
        status.expect_partial()  # the file may hold more (another call restores the optimiser)
        status.assert_existing_objects_matched()  # ...but every variable asked for must be there
    except Exception as exc:
        what = "optimizer state" if optimizer is not None else "weights"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CorruptArtifactError(
            f"cannot load checkpoint {what} from {prefix} ({detail}); the checkpoint is damaged or does not match the model"
        ) from exc
