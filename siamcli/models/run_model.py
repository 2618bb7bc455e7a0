"""A run's embedding model, loaded once, with the facts every caller needs about it.

Index, shard, evaluate and export (and, as they move here, query, serve, verify, cluster,
dedupe and the API) all load `<run>/model.keras` and then need the same things: the length of
its vectors, the side it resizes images to, and its sha256 (the fingerprint an index and a
calibration are tied to). They are read here, one way, so a caller never re-derives one
differently from another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from siamcli.errors import UserError
from siamcli.hashing import file_sha256
from siamcli.rundir import RunPaths


@dataclass
class LoadedRunModel:
    model: object  # the Keras embedding model
    path: Path  # the model.keras it was read from
    dim: int  # length of its (unit) vectors
    image_size: int  # side it resizes every image to
    known_sha256: str | None = None  # the fingerprint, when the caller had hashed the file already

    @functools.cached_property
    def sha256(self) -> str:
        """Fingerprint of model.keras: what indexes and calibrations record (hashed once, when first asked)."""
        return self.known_sha256 or file_sha256(self.path)

    def check_matches(self, index_dir: Path, index_dim: int) -> None:
        check_dimension(self.path, self.dim, index_dir, index_dim)


def check_dimension(model_path: Path, dim: int, index_dir: Path, index_dim: int) -> None:
    """An index of `index_dim`-d vectors must be searched and extended with a model of that length.
    The message ends with "rebuild it" (index.hints.REBUILD), so index.store.naming_the_rebuild
    adds the exact command."""
    if index_dim != dim:
        raise UserError(f"index {index_dir} holds {index_dim}-d vectors but model {model_path} makes {dim}-d ones; rebuild it")


def load_run_model(run: RunPaths | Path, sha256: str | None = None) -> LoadedRunModel:
    """Load the run's model.keras (a RunPaths, or the model file itself) and read its facts.
    `sha256`: the fingerprint when the caller has hashed the file already (it is read at most once)."""
    from siamcli.models.embed import model_image_size
    from siamcli.models.embedding import load_embedding_model

    path = Path(run.model if isinstance(run, RunPaths) else run)
    model = load_embedding_model(path)
    return LoadedRunModel(model=model, path=path, dim=int(model.output_shape[-1]), image_size=model_image_size(model),
                          known_sha256=sha256)
