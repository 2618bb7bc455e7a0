"""siamcli train DATA_DIR

Its training options are TrainConfig's fields (training/config.py): each becomes an option of
the same name (`image_size` → `--image-size`), with the field's type, default and help, so the
options, the engine's defaults and the help are declared once, there.
"""

from __future__ import annotations

import dataclasses
import inspect
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from siamcli.cli.common import engine_errors, fail, fmt, print_json, stdout
from siamcli.cli.progress import ProgressDisplay
from siamcli.training.config import TrainConfig

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _option_parameter(spec: dataclasses.Field) -> inspect.Parameter:
    """TrainConfig field → the Typer option that sets it."""
    choices = spec.metadata.get("choices")
    kind = choices or _TYPES[str(spec.type).split("|")[0].strip()]
    optional = "None" in str(spec.type)
    default = choices(spec.default) if choices is not None and spec.default is not None else spec.default
    annotation = Annotated[Optional[kind] if optional else kind, typer.Option(help=spec.metadata["help"])]
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


OPTIONS = [spec for spec in dataclasses.fields(TrainConfig) if spec.name != "data_dir"]


def train(
    ctx: typer.Context,
    data_dir: Annotated[Optional[Path], typer.Argument(metavar="DATA_DIR", show_default=False,
                                                       help=dataclasses.fields(TrainConfig)[0].metadata["help"])] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/TIMESTAMP); `latest` beside it will point at it.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run from its last complete epoch, with its own data, split and options.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="Train again with the resolved options of an earlier run (RUN/config.json or RUN); DATA_DIR and options given here override them.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run directory at --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document on stdout.")] = False,
    **options,
) -> None:
    """Train a Siamese embedding network with triplet loss on DATA_DIR (one sub-folder per identity).

    Phase 1 trains the embedding head on a frozen ResNet50 (cached features); phase 2 fine-tunes the backbone. The run directory receives model.keras, start.keras (the start model, epoch 0), config.json, split.json, history.csv, loss.png and checkpoints/. `siamcli train --resume RUN` continues an interrupted run; `siamcli train --config RUN` trains again with its options.
    """
    if resume is not None and data_dir is not None:
        fail("--resume continues a run with the data and options it was started with; drop DATA_DIR")
    if resume is not None and config_file is not None:
        fail("--resume continues a run with its own options; --config starts a new run from them: give one of the two")
    if resume is None and data_dir is None and config_file is None:
        fail("missing DATA_DIR (a folder with one sub-folder per identity), --config RUN or --resume RUN; see `siamcli train --help`")
    with engine_errors():
        config = None
        if resume is None:  # validated here, before TensorFlow is imported: a typo costs no start-up
            given = {name: value.value if hasattr(value, "value") else value for name, value in options.items()}
            given["data_dir"] = str(data_dir) if data_dir is not None else None
            if config_file is None:
                config = TrainConfig(**given)
            else:  # the earlier run's options, then what this command line says explicitly
                explicit = {name: value for name, value in given.items() if _given(ctx, name)}
                config = dataclasses.replace(TrainConfig.from_run(config_file), **explicit)
            config = config.validate()
        from siamcli.training import trainer

        signal.signal(signal.SIGTERM, _interrupt)  # `kill` ends like Ctrl-C: with the resume command
        with ProgressDisplay() as display:
            if config is None:
                result = trainer.resume(resume, events=display)
            else:
                result = trainer.train(config, out=str(out) if out else None, force=force, events=display)
    _report(result, json_output)


def _signature() -> inspect.Signature:
    """The command's parameters as Typer reads them: DATA_DIR and --out, then one option per
    TrainConfig field, then the run controls (--resume, --config, --force, --json)."""
    own = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    keyword = [p.replace(kind=p.KEYWORD_ONLY) for p in own[1:]]
    return inspect.Signature([own[0], *keyword[:2], *map(_option_parameter, OPTIONS), *keyword[2:]])


train.__signature__ = _signature()


def _given(ctx: typer.Context, name: str) -> bool:
    """Was option `name` set on the command line (or by an environment variable), not left at its default?"""
    source = ctx.get_parameter_source(name)  # click's ParameterSource (Typer may bundle its own click: compared by name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _validation_line(validation: dict) -> str:
    line = f"{validation['images']} images of {validation['identities']} identities: {validation['held_out_identities']} held out"
    if validation.get("images_of_train_identities"):
        line += f" + {validation['images_of_train_identities']} held-out images of training identities"
    return line


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _report(result, json_output: bool) -> None:
    if json_output:
        print_json(result.summary())
    else:
        _print_summary(result)


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """The summary table's (label, value) rows, from `TrainResult.summary()`."""
    rows = [
        ("model", summary["model"]),
        ("identities (train / held out)", f"{summary['train_identities']} / {summary['val_identities']}"),
        ("images (train / held out / skipped)", f"{summary['train_images']} / {summary['val_images']} / {summary['skipped_files']}"),
    ]
    validation = summary.get("validation") or {}
    if validation.get("images"):
        rows.append(("validation", _validation_line(validation)))
    rows.append(("epochs", str(summary["epochs"])))
    if summary.get("pixel_weight_chosen_by"):
        rows.append(("start's pixel weight", f"{summary['pixel_weight']:g} (chosen by {summary['pixel_weight_chosen_by']})"))
    if summary.get("selection"):
        rows.append(("kept vs start", summary["selection"]))
    kept = summary["best"]  # the JSON keeps its name; the kept epoch need not be the best on validation
    if kept:
        rows.append(("kept epoch", f"{summary['best_epoch']} ({kept.get('phase')})"))
        rows.append(("val precision@1", fmt(kept.get("precision_at_1"))))
        rows.append(("val MAP@R", fmt(kept.get("map_at_r"))))
    rows.extend((f"images/s ({phase})", f"{speed:.1f}") for phase, speed in summary["images_per_second"].items())
    return rows


def _print_summary(result) -> None:
    table = Table(title=f"Training finished: {result.run_dir}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for label, value in summary_rows(result.summary()):
        table.add_row(label, value)
    stdout.print(table)
