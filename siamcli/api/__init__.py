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
message, its options named as this API's keywords (`k must be …`, not `--k`: api/names.py;
values of the wrong type too: api/options.py). Images are paths, arrays or PIL images
(api/images.py says which arrays). Nothing heavy is imported until it is needed: `import
siamcli` loads no TensorFlow. Each docstring's example runs in the tests (tests/test_api.py), from a folder holding the
repository's `sample_data/`, with tiny settings so that it takes seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamcli import rundir
from siamcli.api.names import api_names
from siamcli.api.options import checked_instance, checked_options, count
from siamcli.errors import UserError
from siamcli.events import NO_EVENTS, Events
from siamcli.models import pretrained_run  # noqa: F401  registers run="imagenet" with rundir.find_run
from siamcli.run_config import read_config, read_split
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
    _sha256: str | None = field(default=None, repr=False)  # of model_path, read at the first verify

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def embedding_dim(self) -> int:
        return int(self.config["embedding_dim"])

    @property
    def split(self) -> dict:
        """{"train": [...], "val": [...]}: the identities trained on and held out."""
        return read_split(self.run_dir / rundir.SPLIT_FILE).to_json()

    @property
    def model(self):
        """The Keras model (images of any size, RGB 0–255 → unit embeddings), loaded once."""
        if self._model is None:
            from siamcli.models.embedding import load_embedding_model

            self._model = load_embedding_model(self.model_path)
        return self._model

    def embed(self, images, batch_size: int = 32) -> np.ndarray:
        """Embeddings of `images`: paths (files or folders), RGB arrays, PIL images, a list mixing
        them (of any sizes), or an (n, h, w, 3) array. Arrays are uint8, or floats with values
        0–255 as decoded files give; 0–1 floats are refused (multiply by 255).

        Returns an (n, d) float32 array of unit rows, in input order. An image that does not
        decode raises UserError naming it (rows would otherwise no longer match the inputs).

        >>> import numpy as np, siamcli
        >>> from PIL import Image
        >>> run = siamcli.load_run("runs/notebook")
        >>> vectors = run.embed(["sample_data/queries/s1_10.png", "sample_data/queries/s2_10.png"])
        >>> vectors.shape, vectors.dtype.name
        ((2, 16), 'float32')
        >>> bool(abs(float((vectors ** 2).sum(axis=1)[0]) - 1.0) < 1e-5)
        True
        >>> photo = Image.open("sample_data/queries/s1_10.png")
        >>> same = run.embed([photo, np.asarray(photo.convert("RGB")), np.asarray(photo.resize((40, 50)).convert("RGB"))])
        >>> bool(np.allclose(same[:2], vectors[0], atol=1e-5))
        True
        """
        from siamcli.api.images import embed_inputs

        with api_names():
            embedded = embed_inputs(self.model, images, count("batch_size", batch_size))
            if embedded.failures:
                first = embedded.failures[0]
                more = f" (and {len(embedded.failures) - 1} more)" if len(embedded.failures) > 1 else ""
                raise UserError(f"cannot read image {first.path}: {first.reason}{more}")
            return embedded.vectors

    def verify(self, a, b, threshold: float | None = None):
        """Whether images `a` and `b` show the same identity, as `siamcli verify A B` says it.

        Each is one image: a path to a file, an RGB array (h, w, 3) or a PIL image, taken as
        `embed` takes it. Returns a `Verdict`: `similarity` (cosine, −1 to 1) and `match`
        (similarity ≥ threshold). The threshold is `threshold` (a cosine similarity) when given,
        else the run's calibrated one (`evaluate` writes it), read at each call, with the
        false-match and false-non-match rates measured there (`far`, `frr`, their `_ci95`
        intervals); with neither, `match` is None and `reason` says why. `to_json()` is what
        `siamcli verify A B --json` prints.

        >>> import siamcli
        >>> from PIL import Image
        >>> run = siamcli.load_run("runs/notebook")
        >>> same = run.verify("sample_data/queries/s1_10.png", Image.open("sample_data/queries/s1_10.png"), threshold=0.9)
        >>> round(same.similarity, 4), same.match, same.threshold_source
        (1.0, True, 'option')
        >>> verdict = run.verify("sample_data/queries/s1_10.png", "sample_data/queries/s2_10.png")
        >>> -1 <= verdict.similarity < 1, verdict.threshold_source in ("calibration", None)
        (True, True)
        """
        from siamcli.api.images import one_image
        from siamcli.api.options import typed
        from siamcli.api.verdict import Verdict
        from siamcli.hashing import file_sha256
        from siamcli.pairs.verify import decision_for, verify_images

        with api_names(threshold="threshold"):
            images = one_image(a, "a"), one_image(b, "b")
            if self._sha256 is None:
                self._sha256 = file_sha256(self.model_path)
            decision = decision_for(self.run_dir, self._sha256, typed("threshold", threshold, float | None))
            return Verdict.of(verify_images(self.model, *images, decision))


def load_run(run: str | Path | None = None) -> Run:
    """Open a run: its directory, or its model.keras (None: runs/latest).

    >>> import siamcli
    >>> siamcli.load_run("runs/notebook").run_dir.name
    'notebook'
    """
    with api_names():
        paths = rundir.find_run(None if run is None else str(run))
        config = dict(read_config(paths.config)) if paths.config.is_file() else {}
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
class _QueryModel:
    path: Path  # model.keras that embeds image queries
    fingerprint: str  # its sha256, the index's model_fingerprint
    model: Any  # the Keras model
    stamp: tuple  # of the file when it was read


@dataclass
class Index:
    """A FAISS index built by `siamcli index` / `build_index`: search it with images or vectors.

    Read once and kept: the index on first use, the model that embeds image queries on the
    first search by image (`loaded` and `query_model` stay the same objects from call to call).
    Before each call it stats the index folder, its manifest.json and the model file (a few
    microseconds): an index updated or rebuilt since (`siamcli index --append`, `--force`,
    `build_index`) is read again, the model too if its file changed (and checked against the
    index, as `siamcli query` does). The match threshold is read from the run's
    calibration.json at each search by image.

    >>> import siamcli
    >>> index = siamcli.open_index("runs/notebook/index")
    >>> len(index), index.dim
    (108, 16)
    >>> model = index.query_model
    >>> hits = [index.search(f"sample_data/queries/s{person}_10.png", k=1) for person in (1, 2, 5)]
    >>> index.query_model is model   # loaded once, not per search
    True
    """

    directory: Path
    model: str | None = None  # the run whose model embeds queries; None: the index's own
    _loaded: Any = field(default=None, repr=False)
    _stamp: tuple | None = field(default=None, repr=False)  # of the folder and manifest when read
    _query: _QueryModel | None = field(default=None, repr=False)

    @property
    def loaded(self):
        """The index as read from disk (siamcli.index.store.LoadedIndex), read again only when its files changed."""
        from siamcli.index.manifest import MANIFEST
        from siamcli.index.store import load_index

        with api_names():
            stamp = _stamp(self.directory, self.directory / MANIFEST)  # before reading: a change meanwhile reads again next time
            if self._loaded is None or stamp != self._stamp:
                self._loaded, self._stamp = load_index(self.directory), stamp
            return self._loaded

    @property
    def query_model(self):
        """The Keras model that embeds image queries: the index's own (or `run`'s, which must be
        that one), loaded on first use and kept while its file and the index's manifest are unchanged."""
        from siamcli.hashing import file_sha256
        from siamcli.index.locate import resolve_model
        from siamcli.index.search import load_query_model
        from siamcli.index.store import check_model

        loaded = self.loaded
        with api_names():
            path = resolve_model(loaded, self.model)
            previous, stamp = self._query, _stamp(path)
            if previous is None or previous.path != path or previous.stamp != stamp:
                fingerprint = file_sha256(path)
                check_model(loaded.manifest, path, fingerprint, loaded.directory)
                self._query = _QueryModel(path, fingerprint, load_query_model(path, loaded), stamp)
            else:  # the same file: checked against the index as it is now (which may have been rebuilt)
                check_model(loaded.manifest, path, previous.fingerprint, loaded.directory)
            return self._query.model

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

        `queries`: images as `Run.embed` takes them (paths, arrays, PIL images, lists of them),
        embedded with the index's model exactly as `siamcli query` does, or an (n, d) array of
        embeddings (one (d,) vector too). Columns: query (the path; for an in-memory image or a
        vector, its position among the queries), rank (1 = most similar), id, label, similarity
        (cosine), match (True/False for image queries once `evaluate` calibrated a threshold,
        else None), path. k is clipped to the gallery's size. A query file that does not decode
        is left out with a warning (an error when none decodes).

        >>> import siamcli
        >>> hits = siamcli.open_index("runs/notebook/index").search("sample_data/queries/s5_10.png", k=3)
        >>> list(hits.columns)
        ['query', 'rank', 'id', 'label', 'similarity', 'match', 'path']
        >>> hits["rank"].tolist()
        [1, 2, 3]
        """
        import pandas as pd

        from siamcli.index.search import search_vectors

        with api_names():
            k = count("k", k)
            vectors = _vectors(queries, self.dim)
            if vectors is not None:
                names, answers = list(range(len(vectors))), search_vectors(self.loaded, vectors, k)
            else:
                names, answers = self._search_images(queries, k, count("batch_size", batch_size))
        columns = ["query", "rank", "id", "label", "similarity", "match", "path"]
        return pd.DataFrame(
            [{"query": q, "rank": n.rank, "id": n.id, "label": n.label, "similarity": n.similarity, "match": n.match, "path": n.path}
             for q, neighbours in zip(names, answers) for n in neighbours],
            columns=columns,
        )

    def _search_images(self, queries, k: int, batch_size: int):
        import warnings

        from siamcli.api.images import embed_inputs
        from siamcli.calibration import similarity_threshold
        from siamcli.data.scan import describe_skipped
        from siamcli.index.search import search_vectors
        from siamcli.threshold import run_threshold

        model = self.query_model
        embedded = embed_inputs(model, queries, batch_size)
        if embedded.failures and not embedded.names:
            raise UserError("none of the query images could be read; " + describe_skipped(embedded.failures))
        if embedded.failures:
            warnings.warn(describe_skipped(embedded.failures), UserWarning, stacklevel=3)
        threshold, _ = run_threshold(self._query.path.parent, self._query.fingerprint)
        return embedded.names, search_vectors(self.loaded, embedded.vectors, k, similarity_threshold(threshold))


def open_index(index: str | Path | None = None, run: str | Path | None = None) -> Index:
    """Open an index directory; without one, `<run>/index` (None: runs/latest/index).

    >>> import siamcli
    >>> len(siamcli.open_index(run="runs/notebook"))
    108
    """
    from siamcli.index.locate import resolve_index_dir

    with api_names():
        directory = resolve_index_dir(None if index is None else str(index), None if run is None else str(run))
    opened = Index(directory, None if run is None else str(run))
    _ = opened.loaded  # read and checked now: a damaged or missing index is an error here, not at the first search
    return opened


def build_index(gallery: str | Path, run: str | Path | None = None, out: str | Path | None = None,
                events: Events | None = None, **options):
    """Embed a folder of images and build (or update) its FAISS index, as `siamcli index` does.

    `options` are IndexOptions' fields (index_type, append, prune, force, batch_size, shard, …);
    with `shard="I/N"` it writes that shard's partial index, as `siamcli index --shard I/N` does.
    Returns the IndexResult (`.summary()` is what `siamcli index --json` prints).

    >>> import siamcli
    >>> result = siamcli.build_index("sample_data/gallery", run="runs/notebook", out="runs/notebook/index2", force=True)
    >>> result.summary()["count"]
    108
    """
    from siamcli.index.build import IndexOptions
    from siamcli.index.build import build_index as build

    with api_names(IndexOptions, exclude=frozenset({"model"})):
        settings = IndexOptions(gallery=str(gallery), model=None if run is None else str(run), out=None if out is None else str(out),
                                **checked_options(IndexOptions, options, exclude={"gallery", "model", "out"}))
        if settings.shard is not None:  # a partial is shard.build_part's work, as for the CLI
            from siamcli.index.shard import build_part

            return build_part(settings, events=events or NO_EVENTS)
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

    with api_names(TrainConfig):
        if config is None:
            if data_dir is None:
                raise UserError("give data_dir (a folder with one sub-folder per identity) or config=TrainConfig(...)")
            config = TrainConfig(data_dir=str(data_dir), **checked_options(TrainConfig, options, exclude={"data_dir"}))
        elif options or data_dir is not None:
            raise UserError("give either config=TrainConfig(...) or data_dir and options, not both")
        return trainer.train(checked_instance(config, TrainConfig, "config"), out=None if out is None else str(out), force=force, events=events)


def resume(run: str | Path, events: Events | None = None):
    """Continue an interrupted run from its last complete epoch (`siamcli train --resume RUN`).

    A run that finished has nothing to resume, and says so:

    >>> import siamcli
    >>> siamcli.resume("runs/notebook")
    Traceback (most recent call last):
    siamcli.errors.UserError: runs/notebook already finished all its epochs; nothing to resume
    """
    from siamcli.training import trainer

    with api_names():
        return trainer.resume(run, events=events)


def evaluate(run: str | Path | None = None, data_dir: str | Path | None = None, out: str | Path | None = None,
             options=None, events: Events | None = None, **option_values):
    """Score a run as `siamcli evaluate` does (held-out identities, or every identity of `data_dir`).

    Options as EvaluateOptions' fields (ks, baselines, max_pairs, target_far, …) or `options=`.
    Returns the EvaluationReport: `.metrics` (precision_at_1, map_at_r, …), `.metrics_json()`
    (what `<run>/eval/metrics.json` holds), `.embeddings`, `.labels`, `.paths`, `.calibration`.
    Here precision@1 is recomputed from the report's own embeddings: the share of held-out
    images whose most similar other image shows the same person.

    >>> import json, numpy as np, siamcli
    >>> report = siamcli.evaluate("runs/notebook", ks=(1, 5), baselines=False)
    >>> report.embeddings.shape
    (54, 16)
    >>> similarity = report.embeddings @ report.embeddings.T
    >>> np.fill_diagonal(similarity, -np.inf)
    >>> labels = np.asarray(report.labels)
    >>> bool(np.isclose(np.mean(labels[similarity.argmax(axis=1)] == labels), report.metrics.precision_at_1))
    True
    >>> json.loads((report.out_dir / "metrics.json").read_text())["map_at_r"] == report.metrics_json()["map_at_r"]
    True
    """
    from siamcli.evaluation.report import EvaluateOptions
    from siamcli.evaluation.report import evaluate as run_evaluation

    with api_names(EvaluateOptions, k="ks"):
        if options is None:
            options = EvaluateOptions(**checked_options(EvaluateOptions, option_values))
        elif option_values:
            raise UserError("give either options=EvaluateOptions(...) or option keywords, not both")
        return run_evaluation(None if run is None else str(run), None if data_dir is None else str(data_dir),
                              None if out is None else str(out), options=checked_instance(options, EvaluateOptions, "options"), events=events)


# ---- helpers ------------------------------------------------------------------------------------
def _stamp(*paths: Path) -> tuple:
    """(device, inode, size, mtime) of each path, None for a missing one: what a rewrite or a
    rename over it changes (an index update renames manifest.json; a rebuild renames the folder)."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _vectors(queries, dim: int) -> np.ndarray | None:
    """Queries given as embeddings ((n, d), or one (d,) vector of numbers), checked; None for images."""
    if not isinstance(queries, np.ndarray) or queries.ndim not in (1, 2) or queries.dtype.kind not in "fiu":
        return None
    vectors = np.atleast_2d(queries).astype(np.float32)
    if vectors.shape[1] != dim:
        raise UserError(f"queries are {vectors.shape[1]}-d vectors, the index holds {dim}-d ones "
                        "(an image is an (h, w, 3) array)")
    if not np.isfinite(vectors).all():
        raise UserError("query vectors hold NaN or infinite values")
    return vectors
