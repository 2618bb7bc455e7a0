"""Where a run's index is, and which model an index goes with: the defaults every command shares.

    <run>/index                    the index `siamcli index` writes and `siamcli query` reads
    <run>/index.part-I-of-N        shard I's partial (`siamcli index --shard I/N`)

--index (or --out) overrides the folder; --model names the run; neither → runs/latest.
"""

from __future__ import annotations

from pathlib import Path

from siamcli.errors import UserError
from siamcli.rundir import DEFAULT_RUNS_ROOT, LATEST, MODEL_FILE, find_run

INDEX_DIR_NAME = "index"  # default --out / --index: <model run>/index


def default_index_dir(run_dir: Path) -> Path:
    return run_dir / INDEX_DIR_NAME


def default_part_dir(run_dir: Path, shard: int, shards: int) -> Path:
    return run_dir / f"{INDEX_DIR_NAME}.part-{shard}-of-{shards}"


def resolve_index_dir(index: str | None, model: str | None) -> Path:
    """--index, else <--model run>/index, else runs/latest/index."""
    if index:
        return Path(index)
    if model:
        return default_index_dir(find_run(model).run_dir)
    latest = DEFAULT_RUNS_ROOT / LATEST
    if not latest.exists():
        raise UserError("no --index given and runs/latest does not exist; pass --index INDEX_DIR, or train and index first")
    return default_index_dir(latest.resolve())


def resolve_model(loaded, model: str | None) -> Path:
    """--model, else the manifest's model_path, else the model.keras of the run holding the index
    (`loaded`: a store.LoadedIndex)."""
    if model:
        return find_run(model).model
    recorded = Path(str(loaded.manifest["model_path"]))
    if recorded.is_file():
        return recorded
    beside = loaded.directory.resolve().parent / MODEL_FILE
    if beside.is_file():
        return beside
    raise UserError(f"the model index {loaded.directory} was built with ({recorded}) is gone; pass --model RUN_DIR with that model")
