"""Placeholder while the command is being built; replaced by the real module."""

import typer


def query() -> None:
    """Not built yet."""
    raise typer.Exit(1)
