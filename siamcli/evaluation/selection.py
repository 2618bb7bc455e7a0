"""Which images an evaluation (or an export's check) scores: DATA_DIR, else the run's held-out identities.

Light on purpose (no pandas, no matplotlib): `siamcli export` reads the held-out sample it checks
its artifacts on through here without importing the report's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siamcli import rundir
from siamcli.data.scan import ImageItem, Skipped, scan_folder
from siamcli.errors import UserError
from siamcli.run_config import read_config, read_split


@dataclass(frozen=True)
class DataSelection:
    root: str
    items: list[ImageItem]
    skipped: list[Skipped]
    source: str  # what was chosen, in words
    held_out: bool  # True: the run's held-out identities (split.json "val")


def select_data(run: rundir.RunPaths, data_dir: str | None) -> DataSelection:
    """DATA_DIR if given (every identity in it), else the run's held-out identities."""
    if data_dir is not None:
        scan = scan_folder(data_dir, labelled=True)
        return DataSelection(str(data_dir), scan.items, scan.skipped, f"every identity in {data_dir}", held_out=False)
    config = read_config(run.config)
    held_out = read_split(run.split).val
    if not held_out:
        raise UserError(f"the run {run.run_dir} held out no identities (split.json 'val' is empty); pass DATA_DIR to evaluate a labelled folder")
    if not config.get("data_dir"):
        raise UserError(f"{run.config} does not name the training data (data_dir); pass DATA_DIR")
    root = config.find_data(run.run_dir)
    if root is None:
        raise UserError(f"the run's data folder {config['data_dir']} (config.json data_dir) is not there; pass DATA_DIR")
    root = str(root)
    scan = scan_folder(root, labelled=True)
    wanted = set(held_out)
    items = [item for item in scan.items if item.label in wanted]
    skipped = [s for s in scan.skipped if _top_folder(s.path, root) in wanted]
    return DataSelection(root, items, skipped, f"the run's {len(held_out)} held-out identities in {root} (split.json)", held_out=True)


def _top_folder(path: str, root: str) -> str | None:
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return None
    return parts[0] if parts else None
