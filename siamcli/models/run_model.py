"""A run's embedding model, loaded once, with the facts every caller needs about it.

Index, shard, evaluate and export (and, as they move here, query, serve, verify, cluster,
dedupe and the API) all load `<run>/model.keras` and then need the same things: the length of
its vectors, the side it resizes images to, and its sha256 (the fingerprint an index and a
calibration are tied to). They are read here, one way, so a caller never re-derives one
differently from another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siamcli.errors import UserError
from siamcli.hashing import file_sha256
from siamcli.rundir import RunPaths


@dataclass(frozen=True)
class LoadedRunModel:
    model: object  # the Keras embedding model
    path: Path  # the model.keras it was read from
    dim: int  # length of its (unit) vectors
    image_size: int  # side it resizes every image to
    sha256: str  # fingerprint of model.keras: what indexes and calibrations record

    def check_matches(self, index_dir: Path, index_dim: int) -> None:
        """The index at `index_dir` must hold vectors of this model's length. The message ends with
        "rebuild it" (index.hints.REBUILD), so index.store.naming_the_rebuild adds the exact command."""
        if index_dim != self.dim:
            raise UserError(f"index {index_dir} holds {index_dim}-d vectors but model {self.path} makes {self.dim}-d ones; "
                            "rebuild it")


def load_run_model(run: RunPaths | Path, sha256: str | None = None) -> LoadedRunModel:
    """Load the run's model.keras (a RunPaths, or the model file itself) and read its facts.
    `sha256`: the fingerprint when the caller has hashed the file already (it is read once)."""
    from siamcli.models.embed import model_image_size
    from siamcli.models.embedding import load_embedding_model

    path = Path(run.model if isinstance(run, RunPaths) else run)
    model = load_embedding_model(path)
    return LoadedRunModel(model=model, path=path, dim=int(model.output_shape[-1]), image_size=model_image_size(model),
                          sha256=sha256 or file_sha256(path))
