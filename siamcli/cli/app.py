"""The `siamcli` command: one sub-command per module, joined here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from siamcli import __version__
from siamcli.cli import evaluate_cmd, index_cmd, query_cmd, serve_cmd, train_cmd

app = typer.Typer(
    name="siamcli",
    help="Learn image similarity from folders of labelled photos, index a gallery with FAISS, search and evaluate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"siamcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Learn image similarity from folders of labelled photos, index a gallery with FAISS, search and evaluate it."""


app.command("train")(train_cmd.train)
app.command("index")(index_cmd.index)
app.command("query")(query_cmd.query)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("serve")(serve_cmd.serve)


def main() -> None:
    """Console entry point: usage errors become one stderr line and exit code 2."""
    command = typer.main.get_command(app)
    args = sys.argv[1:]
    if not args:  # a bare `siamcli` shows the help, like `siamcli --help`
        args = ["--help"]
    try:
        code = command.main(args=args, prog_name="siamcli", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except Exception as exc:
        # Typer's (click's) usage errors carry exit_code 2 and a message; show one line.
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "siamcli"
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}; see `{where} --help`\n")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
