"""siamcli from Python (a notebook, a script): the same engine and options as the CLI, results
as arrays and DataFrames instead of tables.

    import siamcli
    result = siamcli.train("faces/", weights="none", image_size=96)   # TrainConfig's options
    run = siamcli.load_run(result.run_dir)
    vectors = run.embed(["a.jpg", "b.jpg"])                             # (2, d) float32, unit rows
    siamcli.build_index("gallery/", run=run.run_dir)
    hits = siamcli.open_index(run=run.run_dir).search(["query.jpg"], k=5)  # pandas DataFrame
    report = siamcli.evaluate(run.run_dir)                              # report.metrics.map_at_r

Every function here is a thin call into the engine the CLI uses (`models/embed.py` is the one
embedding path, `index/`, `training/trainer.py`, `evaluation/report.py`), so a notebook and
`siamcli query` give the same answers. Errors are `siamcli.UserError` with the CLI's one-line
message. Nothing heavy is imported until it is needed: `import siamcli` loads no TensorFlow.
Each docstring's example runs in the tests (tests/test_api.py), from a folder holding the
repository's `sample_data/`, with tiny settings so that it takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from siamcli import rundir
from siamcli.errors import UserError
from siamcli.events import Events
from siamcli.training.config import TrainConfig

__all__ = [
    "Run", "Index", "load_run", "embed", "open_index", "build_index", "train", "resume", "evaluate",
    "TrainConfig", "EvaluateOptions", "IndexOptions", "UserError",
]

_OPTION_CLASSES = {"EvaluateOptions": "siamcli.evaluation.report", "IndexOptions": "siamcli.index.build"}


def __getattr__(name: str):
    """EvaluateOptions and IndexOptions live in modules that import pandas and matplotlib: load them on first use."""
    if name in _OPTION_CLASSES:
        import importlib

        return getattr(importlib.import_module(_OPTION_CLASSES[name]), name)
    raise AttributeError(f"module 'siamcli.api' has no attribute {name!r}")


@dataclass
class Run:
    """A trained run directory: its options, split, and embedding model (loaded on first use).

    >>> import siamcli
    >>> run = siamcli.load_run("runs/notebook")
    >>> run.image_size, run.embedding_dim
    (32, 16)
    >>> sorted(run.split)
    ['train', 'val']
    """

    run_dir: Path
    model_path: Path
    config: dict = field(repr=False)
    _model: Any = field(default=None, repr=False)

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])

    @property
    def split(self) -> dict:
        """{"train": [...], "val": [...]}: the identities trained on and held out."""
        return rundir.read_split(rundir.RunPaths(self.run_dir, self.model_path))

    @property
    def model(self):
        """The Keras model (images of any size, RGB 0–255 → unit embeddings), loaded once."""
        if self._model is None:
            from siamcli.models.embedding import load_embedding_model

            self._model = load_embedding_model(self.model_path)
        return self._model

    def embed(self, images, batch_size: int = 32) -> np.ndarray:
        """Embeddings of `images`: paths (a list, or one path or folder) or an (n, h, w, 3) RGB array.

        Returns an (n, d) float32 array of unit rows, in input order. An image that does not
        decode raises UserError naming it (rows would otherwise no longer match the inputs).

        >>> import siamcli
        >>> run = siamcli.load_run("runs/notebook")
        >>> vectors = run.embed(["sample_data/queries/s1_10.png", "sample_data/queries/s2_10.png"])
        >>> vectors.shape, vectors.dtype.name
        ((2, 16), 'float32')
        >>> bool(abs(float((vectors ** 2).sum(axis=1)[0]) - 1.0) < 1e-5)
        True
        """
        from siamcli.models.embed import embed as embed_images

        inputs = _image_inputs(images)
        embedded = embed_images(self.model, inputs, batch_size=batch_size)
        if embedded.failures:
            first = embedded.failures[0]
            more = f" (and {len(embedded.failures) - 1} more)" if len(embedded.failures) > 1 else ""
            raise UserError(f"cannot read image {first.path}: {first.reason}{more}")
        return embedded.vectors


def load_run(run: str | Path | None = None) -> Run:
    """Open a run: its directory, or its model.keras (None: runs/latest).

    >>> import siamcli
    >>> siamcli.load_run("runs/notebook").run_dir.name
    'notebook'
    """
    paths = rundir.find_run(None if run is None else str(run))
    config = rundir.read_json(paths.config, "run config") if paths.config.is_file() else {}
    if "image_size" not in config or "embedding_dim" not in config:
        from siamcli.models.embed import model_image_size
        from siamcli.models.embedding import load_embedding_model

        model = load_embedding_model(paths.model)
        config = {**config, "image_size": model_image_size(model), "embedding_dim": int(model.output_shape[-1])}
        return Run(paths.run_dir, paths.model, config, model)
    return Run(paths.run_dir, paths.model, config)


def embed(images, run: str | Path | Run | None = None, batch_size: int = 32) -> np.ndarray:
    """Embeddings of `images` with a run's model (None: runs/latest); see `Run.embed`.

    >>> import siamcli
    >>> siamcli.embed("sample_data/queries", run="runs/notebook").shape
    (12, 16)
    """
    return (run if isinstance(run, Run) else load_run(run)).embed(images, batch_size=batch_size)


@dataclass
class Index:
    """A FAISS index built by `siamcli index` / `build_index`: search it with images or vectors.

    >>> import siamcli
    >>> index = siamcli.open_index("runs/notebook/index")
    >>> len(index), index.dim
    (108, 16)
    """

    directory: Path
    model: str | None = None  # the run whose model embeds queries; None: the index's own
    _loaded: Any = field(default=None, repr=False)

    @property
    def loaded(self):
        if self._loaded is None:
            from siamcli.index.store import load_index

            self._loaded = load_index(self.directory)
        return self._loaded

    def __len__(self) -> int:
        return self.loaded.count

    @property
    def dim(self) -> int:
        return self.loaded.dim

    def items(self):
        """Every indexed image as a DataFrame: id, path, label (row order = FAISS order)."""
        import pandas as pd

        return pd.DataFrame([{"id": item.id, "path": item.path, "label": item.label} for item in self.loaded.items])

    def search(self, queries, k: int = 5, batch_size: int = 32):
        """The k most similar gallery images of each query, as one pandas DataFrame.

        `queries`: image paths (a list, or one path or folder), embedded with the index's model
        exactly as `siamcli query` does, or an (n, d) array of embeddings. Columns: query (the
        path, or the row number of a vector), rank (1 = most similar), id, label, similarity
        (cosine), match (True/False once `evaluate` calibrated a threshold, else None), path.

        >>> import siamcli
        >>> hits = siamcli.open_index("runs/notebook/index").search("sample_data/queries/s5_10.png", k=3)
        >>> list(hits.columns)
        ['query', 'rank', 'id', 'label', 'similarity', 'match', 'path']
        >>> hits["rank"].tolist()
        [1, 2, 3]
        """
        import pandas as pd

        columns = ["query", "rank", "id", "label", "similarity", "match", "path"]
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            from siamcli.index.search import search_vectors

            if queries.shape[1] != self.dim:
                raise UserError(f"queries are {queries.shape[1]}-d vectors, the index holds {self.dim}-d ones")
            answers = search_vectors(self.loaded, queries.astype(np.float32), k)
            rows = [(i, n) for i, neighbours in enumerate(answers) for n in neighbours]
        else:
            from siamcli.index.search import query_images

            outcome = query_images(_paths(queries), index=str(self.directory), model=self.model, k=k, batch_size=batch_size)
            rows = [(result.query, n) for result in outcome.results for n in result.neighbours]
        return pd.DataFrame(
            [{"query": q, "rank": n.rank, "id": n.id, "label": n.label, "similarity": n.similarity, "match": n.match, "path": n.path}
             for q, n in rows],
            columns=columns,
        )


def open_index(index: str | Path | None = None, run: str | Path | None = None) -> Index:
    """Open an index directory; without one, `<run>/index` (None: runs/latest/index).

    >>> import siamcli
    >>> len(siamcli.open_index(run="runs/notebook"))
    108
    """
    from siamcli.index.search import resolve_index_dir
    from siamcli.index.store import load_index

    directory = resolve_index_dir(None if index is None else str(index), None if run is None else str(run))
    return Index(directory, None if run is None else str(run), load_index(directory))


def build_index(gallery: str | Path, run: str | Path | None = None, out: str | Path | None = None,
                events: Events | None = None, **options):
    """Embed a folder of images and build (or update) its FAISS index, as `siamcli index` does.

    `options` are IndexOptions' fields (index_type, append, prune, force, batch_size, …).
    Returns the IndexResult (`.summary()` is what `siamcli index --json` prints).

    >>> import siamcli
    >>> result = siamcli.build_index("sample_data/gallery", run="runs/notebook", out="runs/notebook/index2", force=True)
    >>> result.summary()["count"]
    108
    """
    from siamcli.index.build import IndexOptions
    from siamcli.index.build import build_index as build

    _check_fields(IndexOptions, options, exclude={"gallery", "model", "out"})
    settings = IndexOptions(gallery=str(gallery), model=None if run is None else str(run), out=None if out is None else str(out), **options)
    return build(settings, events=events)


def train(data_dir: str | Path | None = None, *, config: TrainConfig | None = None, out: str | Path | None = None,
          force: bool = False, events: Events | None = None, **options):
    """Train a run, as `siamcli train DATA_DIR` does, with TrainConfig's options as keywords
    (or a whole `config=TrainConfig(...)`, e.g. one read back with `TrainConfig.from_json`).

    Returns the TrainResult: `.run_dir`, `.history` (a DataFrame, one row per epoch),
    `.best_metrics`, `.summary()`. Tiny settings here, so that the example runs in seconds:

    >>> import siamcli
    >>> result = siamcli.train("sample_data/gallery", out="runs/example", force=True, weights="none",
    ...                        image_size=32, embedding_dim=16, frozen_epochs=1, finetune_epochs=0,
    ...                        steps_per_epoch=2, val_fraction=0.5)
    >>> list(result.history["phase"])
    ['frozen']
    >>> (result.run_dir / "model.keras").is_file()
    True
    """
    from siamcli.training import trainer

    if config is None:
        if data_dir is None:
            raise UserError("give data_dir (a folder with one sub-folder per identity) or config=TrainConfig(...)")
        _check_fields(TrainConfig, options, exclude={"data_dir"})
        config = TrainConfig(data_dir=str(data_dir), **options)
    elif options or data_dir is not None:
        raise UserError("give either config=TrainConfig(...) or data_dir and options, not both")
    return trainer.train(config, out=None if out is None else str(out), force=force, events=events)


def resume(run: str | Path, events: Events | None = None):
    """Continue an interrupted run from its last complete epoch (`siamcli train --resume RUN`).

    A run that finished has nothing to resume, and says so:

    >>> import siamcli
    >>> siamcli.resume("runs/notebook")
    Traceback (most recent call last):
    siamcli.errors.UserError: runs/notebook already finished all its epochs; nothing to resume
    """
    from siamcli.training import trainer

    return trainer.resume(run, events=events)


def evaluate(run: str | Path | None = None, data_dir: str | Path | None = None, out: str | Path | None = None,
             options=None, events: Events | None = None, **option_values):
    """Score a run as `siamcli evaluate` does (held-out identities, or every identity of `data_dir`).

    Options as EvaluateOptions' fields (ks, baselines, max_pairs, target_far, …) or `options=`.
    Returns the EvaluationReport: `.metrics` (precision_at_1, map_at_r, …), `.metrics_json()`,
    `.embeddings`, `.labels`, `.paths`, `.calibration`; files are written to `<run>/eval`.

    >>> import siamcli
    >>> report = siamcli.evaluate("runs/notebook", ks=(1, 5), baselines=False)
    >>> 0.0 <= report.metrics.map_at_r <= 1.0
    True
    >>> report.embeddings.shape
    (54, 16)
    """
    from siamcli.evaluation.report import EvaluateOptions
    from siamcli.evaluation.report import evaluate as run_evaluation

    if options is None:
        _check_fields(EvaluateOptions, option_values)
        options = EvaluateOptions(**option_values)
    elif option_values:
        raise UserError("give either options=EvaluateOptions(...) or option keywords, not both")
    return run_evaluation(None if run is None else str(run), None if data_dir is None else str(data_dir),
                          None if out is None else str(out), options=options, events=events)


# ---- helpers ------------------------------------------------------------------------------------
def _check_fields(cls, given: dict, exclude: set[str] = frozenset()) -> None:
    known = {f.name for f in fields(cls)} - set(exclude)
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; {cls.__name__} has {', '.join(sorted(known))}")


def _paths(images) -> list[str]:
    if isinstance(images, (str, Path)):
        return [str(images)]
    return [str(image) for image in images]


def _image_inputs(images):
    """An (n, h, w, 3) array as it is; paths (folders expanded, as `siamcli query` does) as a list."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"an image array must be (n, height, width, 3) RGB, got shape {images.shape}")
        return images
    from siamcli.index.search import query_paths

    paths, _ = query_paths(_paths(images))
    return paths


