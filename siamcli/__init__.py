"""siamcli: learn an image embedding with triplet loss, search a gallery with FAISS, evaluate it.

The engine (data, models, training, index, evaluation) is importable without Typer or Rich;
`siamcli.cli` is the thin command-line layer over it.
"""

__version__ = "0.1.0"
