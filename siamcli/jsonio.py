"""JSON in and out: the one reader of JSON-object files, numpy/path values, NaN as null.

Every layer imports this (it needs only siamcli.errors): run configs, split files, checkpoint
state and index manifests are all read by `read_json`; `atomic.write_json` and the CLI's
`--json` output both serialise with `json_default`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from siamcli.errors import CorruptArtifactError


def read_json(path: str | os.PathLike, what: str, *, missing: str = "the run is incomplete",
              damaged: str = "the file is damaged") -> dict:
    """The JSON object in `path`, or CorruptArtifactError: "<what> <path> is missing; <missing>",
    "... is not valid JSON; <damaged>" or "... does not hold a JSON object; <damaged>".

    Other OSErrors (a folder in its place, no permission) propagate.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorruptArtifactError(f"{what} {path} is missing; {missing}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptArtifactError(f"{what} {path} is not valid JSON; {damaged}") from exc
    if not isinstance(data, dict):
        raise CorruptArtifactError(f"{what} {path} does not hold a JSON object; {damaged}")
    return data


def json_default(value: Any) -> Any:
    """`default=` for json.dumps: numpy scalars and paths appear in configs and metrics; JSON knows neither."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_float(value: float) -> float | None:
    """A metric for JSON: NaN (undefined) becomes null."""
    value = float(value)
    return None if value != value else value
