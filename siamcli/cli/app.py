"""The `siamcli` command: one sub-command per module, joined here."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from siamcli import __version__
from siamcli.cli import cluster_cmd, dedupe_cmd, evaluate_cmd, export_cmd, index_cmd, query_cmd, serve_cmd, train_cmd, verify_cmd
from siamcli.models import pretrained_run  # noqa: F401  registers --model imagenet with rundir.find_run


class _FlagsWithoutTypes:
    """Help shows `--json`, not `--json <bool>`: a type beside a flag invites `--json true`."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class _Command(_FlagsWithoutTypes, TyperCommand):
    pass


class _OneLineErrors(_FlagsWithoutTypes, TyperGroup):
    """Usage errors as one stderr line and exit code 2, however siamcli is invoked (the console
    script, `python -m siamcli`, Typer's test runner), instead of click's framed error box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        args = list(sys.argv[1:] if args is None else args) or ["--help"]  # bare `siamcli`: the help
        try:
            code = super().main(args, prog_name or "siamcli", complete_var, standalone_mode=False, **extra)
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.Abort:
            sys.stderr.write("error: interrupted\n")
            code = 130
        except Exception as exc:
            if not hasattr(exc, "format_message"):  # not a usage error: a real failure
                raise
            # Typer (its bundled click) reports bad usage this way: one line instead.
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "siamcli"
            message = " ".join(exc.format_message().replace("Value error, ", "").split()).rstrip(".")
            sys.stderr.write(f"error: {message}; see `{where} --help`\n")
            code = exc.exit_code
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="siamcli",
    cls=_OneLineErrors,
    help="Learn image similarity from folders of labelled photos, index a gallery with FAISS, search and evaluate it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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


app.command("train", cls=_Command)(train_cmd.train)
app.command("index", cls=_Command)(index_cmd.index)
app.command("query", cls=_Command)(query_cmd.query)
app.command("evaluate", cls=_Command)(evaluate_cmd.evaluate)
app.command("export", cls=_Command)(export_cmd.export)
app.command("serve", cls=_Command)(serve_cmd.serve)
app.command("verify", cls=_Command)(verify_cmd.verify)
app.command("cluster", cls=_Command)(cluster_cmd.cluster)
app.command("dedupe", cls=_Command)(dedupe_cmd.dedupe)


def main() -> None:
    """Console entry point."""
    typer.main.get_command(app).main(prog_name="siamcli")
