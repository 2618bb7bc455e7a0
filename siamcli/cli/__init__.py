"""The command-line layer: parse options, make one engine call, render the result.

This is the only package that imports Typer or Rich. TensorFlow is imported inside the
commands that need it, so `siamcli --help` and `--version` stay fast.
"""
