"""A run's config.json and split.json: one typed record each, with one reader and one writer.

    config.json   {"format": 2, <every training option, resolved>, "data_dir_from_run": "../faces",
                   "replicas": 1, "workers": 1, "strategy_class": "_DefaultDistributionStrategy",
                   "classes": {"train": 16, "val": 4}, "images": {"train": …, "val": …, "skipped": 0},
                   "val_images_of_train_identities": ["alice/003.jpg", …], "versions": {"siamcli": …, …},
                   "selection": {…}}   (selection: written once training has finished)
    split.json    {"train": [identity names], "val": [identity names]}

The training options stay at the top level, as earlier releases wrote them, so a config.json
reads as the options it was trained with (`training/config.py`'s TrainConfig checks their
types); every other key is a fact about the run, typed here. Runs of the release before
`format` was recorded (format 1) read the same way; `siamcli train --config RUN` reads any of
them. A RunConfig is also a read-only mapping over its JSON document (`config["data_dir"]`,
`config.get("weights")`), for code that wants one value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from siamcli.atomic import write_json
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.jsonio import read_json

CONFIG_FORMAT = 2  # 1: the previous release's config.json, which has no "format" key


def fits(value, annotation: str) -> bool:
    """Does a JSON value fit a field annotated `int`, `float | None`, `str`, `bool`, `dict`, `list`…?"""
    allowed = {part.strip().split("[")[0] for part in annotation.split("|")}
    if value is None:
        return "None" in allowed
    if isinstance(value, bool):
        return "bool" in allowed
    if isinstance(value, int):
        return bool(allowed & {"int", "float"})
    kinds = {"float": float, "str": str, "dict": dict, "list": list}
    return any(isinstance(value, kinds[name]) for name in allowed if name in kinds)


def typed_fields(cls, data: dict, source: str, remedy: str = "the file is damaged") -> dict:
    """The keys of `data` that are fields of the dataclass `cls`, each checked against its annotation;
    a value of another type is a CorruptArtifactError naming it, `source` and `remedy`."""
    values = {}
    for spec in dataclasses.fields(cls):
        if spec.name in data:
            if not fits(data[spec.name], str(spec.type)):
                raise CorruptArtifactError(f"{source}: {spec.name} is {data[spec.name]!r}, expected {spec.type}; {remedy}")
            values[spec.name] = data[spec.name]
    return values


@dataclass(frozen=True)
class RunSelection:
    """What model selection kept, against the start model (training/selection.py)."""

    start: dict  # the start model's validation scores (epoch 0)
    kept_epoch: int | None
    kept: dict  # the kept epoch's validation scores and phase
    line: str  # the one-line verdict the run printed
    frozen_length_by_folds: list | None = None  # identity folds' MAP@R after 0, 1, … frozen epochs
    pixel_weight: float = 0.0
    pixel_weight_chosen_by: str = ""
    pixel_weight_scores: dict | None = None


@dataclass(frozen=True)
class RunConfig(Mapping):
    """A run's config.json: its training options (a dict: TrainConfig's fields) and facts."""

    options: dict
    data_dir_from_run: str | None = None  # the data folder seen from the run: found again if both move
    replicas: int | None = None
    workers: int | None = None
    strategy_class: str | None = None
    classes: dict | None = None  # identities: {"train": n, "val": n}
    images: dict | None = None  # {"train": n, "val": n, "skipped": n}
    val_images_of_train_identities: list | None = None  # held out for validation, never trained on
    versions: dict | None = None  # library versions
    selection: RunSelection | None = None

    def to_json(self) -> dict:
        facts = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self) if spec.name != "options"}
        if self.selection is not None:
            facts["selection"] = dataclasses.asdict(self.selection)
        return {"format": CONFIG_FORMAT, **self.options, **{key: value for key, value in facts.items() if value is not None}}

    @classmethod
    def from_json(cls, data: dict, source: str = "config.json") -> RunConfig:
        version = data.get("format", 1)
        if not fits(version, "int"):
            raise CorruptArtifactError(f"{source}: format is {version!r}, expected int; the file is damaged")
        if version > CONFIG_FORMAT:
            raise UserError(f"{source} has format {version}, newer than this siamcli reads ({CONFIG_FORMAT}); upgrade siamcli")
        selection = data.get("selection")
        if selection is not None:
            if not isinstance(selection, dict):
                raise CorruptArtifactError(f"{source}: selection is {selection!r}, expected an object; the file is damaged")
            try:
                selection = RunSelection(**typed_fields(RunSelection, selection, f"{source} selection"))
            except TypeError as exc:  # a required key is missing
                raise CorruptArtifactError(f"{source}: selection lacks a key ({exc}); the file is damaged") from exc
        facts = typed_fields(cls, {key: value for key, value in data.items() if key not in ("options", "selection")}, source)
        known = {spec.name for spec in dataclasses.fields(cls)} | {"format"}
        options = {key: value for key, value in data.items() if key not in known}
        return cls(options=options, selection=selection, **facts)

    def find_data(self, run_dir: Path) -> Path | None:
        """The run's training data: the absolute `data_dir`; if that is gone, the same folder seen
        from the run directory (`data_dir_from_run`: run and data moved together); older runs
        recorded a path relative to where training ran. None when none of these exists."""
        recorded = self.options.get("data_dir")
        candidates = [Path(str(recorded))] if recorded else []
        if self.data_dir_from_run:
            candidates.append(Path(run_dir) / self.data_dir_from_run)
        return next((path.resolve() for path in candidates if path.is_dir()), None)

    # A read-only mapping over the JSON document.
    def __getitem__(self, key: str):
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    __hash__ = None  # a mapping of lists and dicts


def read_config(path: str | Path) -> RunConfig:
    """The RunConfig in `path` (a run's config.json); CorruptArtifactError when missing or damaged."""
    return RunConfig.from_json(read_json(path, "run config"), str(path))


def write_config(path: str | Path, config: RunConfig) -> None:
    write_json(path, config.to_json())


@dataclass(frozen=True)
class RunSplit:
    """split.json: the identities trained on and those held out (never trained on)."""

    train: list[str]
    val: list[str]

    def to_json(self) -> dict:
        return {"train": list(self.train), "val": list(self.val)}


def read_split(path: str | Path) -> RunSplit:
    data = read_json(path, "split file")
    if not all(isinstance(data.get(key), list) for key in ("train", "val")):
        raise CorruptArtifactError(f"split file {path} lacks the 'train' and 'val' lists; the file is damaged")
    return RunSplit(train=[str(name) for name in data["train"]], val=[str(name) for name in data["val"]])


def write_split(path: str | Path, split: RunSplit) -> None:
    write_json(path, split.to_json())

