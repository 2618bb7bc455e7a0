"""siamcli train DATA_DIR"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from siamcli.choices import LrSchedule, Mining, Pooling, Precision, Strategy
from siamcli.cli.common import engine_errors, fail, fmt, print_json, stdout
from siamcli.cli.progress import ProgressDisplay


def train(
    ctx: typer.Context,
    data_dir: Annotated[Optional[Path], typer.Argument(metavar="DATA_DIR", show_default=False, help="Folder with one sub-folder of images per identity.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: runs/TIMESTAMP); `latest` beside it will point at it.")] = None,
    image_size: Annotated[int, typer.Option(help="Side of the square images the network sees (≥ 32).")] = 224,
    embedding_dim: Annotated[int, typer.Option(help="Length of the L2-normalised embedding.")] = 256,
    weights: Annotated[str, typer.Option(help="Backbone start: imagenet, none (from scratch), or PATH to a ResNet50 weights file.")] = "imagenet",
    frozen_epochs: Annotated[int, typer.Option(help="Epochs with the backbone frozen (head trained on cached features).")] = 5,
    finetune_epochs: Annotated[int, typer.Option(help="Epochs with the backbone trainable from --finetune-from on.")] = 5,
    finetune_from: Annotated[Optional[str], typer.Option(help="First ResNet50 layer to fine-tune, or 'all' (default: conv5_block1_out; all with --weights none).")] = None,
    feature_layer: Annotated[Optional[str], typer.Option(help="ResNet50 block output the backbone ends at (default: conv5_block3_out pretrained; conv3_block4_out from scratch).")] = None,
    pooling: Annotated[Optional[Pooling], typer.Option(help="avg (global average) or gridN (an N×N grid of averages) (default: avg pretrained; grid3 from scratch).", show_default=False)] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout on the features in the head (default: 0 pretrained; 0.3 from scratch).")] = None,
    batch_size: Annotated[int, typer.Option(help="Global batch: P identities × K images, split across replicas.")] = 32,
    images_per_identity: Annotated[int, typer.Option(help="K: images of each identity in a batch.")] = 4,
    steps_per_epoch: Annotated[Optional[int], typer.Option(help="Batches per epoch (default: one pass over the training images, at least 100).")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Triplet margin on squared distances between unit vectors, 0–4 (default: 0.2 pretrained; 0.5 from scratch).")] = None,
    mining: Annotated[Mining, typer.Option(help="In-batch triplet selection: every violating triplet, batch-hard, semi-hard (FaceNet) or one random negative.")] = Mining.ALL,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate of the frozen phase (default: 1e-3 pretrained; 3e-4 from scratch).")] = None,
    finetune_lr: Annotated[Optional[float], typer.Option(help="Learning rate of fine-tuning (default: 1e-5 pretrained; 1e-4 from scratch).")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of identities held out for validation (never trained on).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split, sampling, augmentation and initialisation.")] = 0,
    strategy: Annotated[Strategy, typer.Option(help="tf.distribute strategy (auto: mirrored when more than one GPU is visible; multi-worker: from TF_CONFIG).")] = Strategy.AUTO,
    precision: Annotated[Precision, typer.Option(help="Compute precision (the loss is always float32).")] = Precision.FLOAT32,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Flip/shift/zoom/brightness augmentation: cached augmented views in the frozen phase, augmented images when fine-tuning.")] = True,
    patience: Annotated[Optional[int], typer.Option(help="End a phase after this many epochs without a better validation MAP@R (0: never; default: 3 frozen, and fine-tune 1 from scratch, 2 pretrained).")] = None,
    finetune_patience: Annotated[Optional[int], typer.Option(help="Patience of the fine-tune phase alone (default: --patience if given, else 1 from scratch, 2 pretrained).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay on kernels (default: 5e-2 with fewer than 100 training identities, else 1e-2).")] = None,
    views: Annotated[int, typer.Option(help="Frozen phase: cache backbone features of this many views of each image (the image and augmented copies).")] = 8,
    val_image_fraction: Annotated[Optional[float], typer.Option(help="Also hold out this share of each training identity's images for validation (default: 0.2 when fewer than 10 identities are held out, else 0).")] = None,
    lr_schedule: Annotated[LrSchedule, typer.Option(help="constant, or cosine (decays to a tenth over each phase).")] = LrSchedule.CONSTANT,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run from its last complete epoch, with its own data, split and options.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="Train again with the resolved options of an earlier run (RUN/config.json or RUN); DATA_DIR and options given here override them.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run directory at --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document on stdout.")] = False,
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
        import dataclasses

        from siamcli.training.config import TrainConfig

        config = None
        if resume is None:  # validated here, before TensorFlow is imported: a typo costs no start-up
            given = {
                "data_dir": str(data_dir) if data_dir is not None else None, "image_size": image_size, "embedding_dim": embedding_dim,
                "weights": weights, "frozen_epochs": frozen_epochs, "finetune_epochs": finetune_epochs, "finetune_from": finetune_from,
                "feature_layer": feature_layer, "pooling": pooling.value if pooling else None, "dropout": dropout,
                "batch_size": batch_size, "images_per_identity": images_per_identity, "steps_per_epoch": steps_per_epoch,
                "margin": margin, "mining": mining.value, "lr": lr, "finetune_lr": finetune_lr, "val_fraction": val_fraction, "seed": seed,
                "strategy": strategy.value, "precision": precision.value, "augment": augment, "patience": patience,
                "lr_schedule": lr_schedule.value, "finetune_patience": finetune_patience, "weight_decay": weight_decay,
                "views": views, "val_image_fraction": val_image_fraction,
            }
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
