"""siamcli: learn an image embedding with triplet loss, search a gallery with FAISS, evaluate it.

From Python (docs/api.md):

    import siamcli
    run = siamcli.load_run("runs/latest")
    vectors = run.embed(["a.jpg", "b.jpg"])                  # (2, d) float32 unit rows
    hits = siamcli.open_index(run="runs/latest").search(["query.jpg"], k=5)   # a DataFrame

The names below (`siamcli.api`) are imported on first use, so `import siamcli` and
`siamcli --help` stay instant: no TensorFlow until a model is needed. The engine (data, models,
training, index, evaluation, export) is importable without Typer or Rich; `siamcli.cli` is the
thin command-line layer over it.
"""

__version__ = "0.1.0"

# The notebook API, loaded lazily by __getattr__ (PEP 562).
__all__ = [
    "Run", "Index", "load_run", "embed", "open_index", "build_index", "train", "resume", "evaluate",
    "TrainConfig", "EvaluateOptions", "IndexOptions", "UserError",
]


def __getattr__(name: str):
    if name in __all__:
        import siamcli.api

        return getattr(siamcli.api, name)
    raise AttributeError(f"module 'siamcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
