"""`--model imagenet`: ResNet50's ImageNet features with no training, as a run directory.

    --model imagenet                  224 px, Keras's ImageNet weights (downloaded once into ~/.keras/models)
    --model imagenet@96               another image side (at least 32)
    --model imagenet:W.weights.h5     a ResNet50(include_top=False) weights file instead (works offline)
    --model imagenet@96:W.weights.h5  both

The network is the backbone `siamcli train` starts from with pretrained weights
(embedding.build_backbone at resnet50.default_cut(pretrained=True): the whole ResNet50, global
average pooling, no thumbnail, so the untrained-backbone baseline of evaluation/baselines.py),
L2-normalised, behind the same Resizing layer as every saved model. It is written once, as
`runs/imagenet-<size>/` (a weights file: `runs/imagenet-<size>-<its sha256[:12]>/`) holding
model.keras and config.json, and reused after: every command that takes a run directory reads
it unchanged, and an index records its real path and sha256.

rundir.find_run resolves the word through the builder this module registers when imported
(rundir may not import the models layer): the CLI and the notebook API import it at start.
"""

from __future__ import annotations

from pathlib import Path

from siamcli import rundir
from siamcli.errors import UserError
from siamcli.models.backbone_weights import IMAGENET_NOTOP_FILE, WeightsChoice, keras_cache_dir, resolve_weights

DEFAULT_SIZE = 224
SPEC_HELP = "imagenet[@SIZE][:WEIGHTS.weights.h5]"


def parse(spec: str) -> tuple[int, str | None]:
    """'imagenet@96:w.h5' → (96, 'w.h5'); 'imagenet' → (224, None)."""
    head, _, weights = spec.strip().partition(":")
    _, at, size = head.partition("@")
    if at and not size.strip().isdigit():
        raise UserError(f"--model {spec}: the size after @ must be a whole number of pixels, as in imagenet@224")
    return (int(size) if at else DEFAULT_SIZE), (weights.strip() or None)


def run_dir_for(spec: str) -> Path:
    """Where the model of `spec` is (or will be) cached: one folder per size and weights."""
    from siamcli.hashing import file_sha256

    size, weights = parse(spec)
    name = f"{rundir.IMAGENET}-{size}" + (f"-{file_sha256(_weights_file(spec, weights))[:12]}" if weights else "")
    return rundir.DEFAULT_RUNS_ROOT / name


def materialise(spec: str) -> Path:
    """The run directory of `spec`, built on first use and reused after."""
    run_dir = run_dir_for(spec)
    if (run_dir / rundir.MODEL_FILE).is_file() and (run_dir / rundir.CONFIG_FILE).is_file():
        return run_dir
    size, weights = parse(spec)
    choice = WeightsChoice("file", str(_weights_file(spec, weights))) if weights else _imagenet_weights()
    _write_run(run_dir, size, choice)
    return run_dir


def _weights_file(spec: str, weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"--model {spec}: weights file {weights} not found; give a ResNet50(include_top=False) "
                        "weights file (.weights.h5), or --model imagenet for Keras's ImageNet weights")
    return path


def _imagenet_weights() -> WeightsChoice:
    """Keras's ImageNet weights (cached, or downloadable now); offline, the path option instead."""
    try:
        return resolve_weights(rundir.IMAGENET)
    except UserError as exc:
        raise UserError(
            "ImageNet weights are not cached and cannot be downloaded (offline); "
            f"put {IMAGENET_NOTOP_FILE} in {keras_cache_dir()}, or pass --model imagenet:PATH "
            "to a ResNet50 weights file (.weights.h5 saved from ResNet50(include_top=False))"
        ) from exc


def _write_run(run_dir: Path, size: int, choice: WeightsChoice) -> None:
    from siamcli import __version__
    from siamcli.atomic import atomic_directory
    from siamcli.models.embedding import assemble, build_backbone, keras
    from siamcli.models.resnet50 import default_cut
    from siamcli.run_config import RunConfig, write_config

    feature_layer, pooling = default_cut(pretrained=True)
    backbone = build_backbone(size, choice, feature_layer, pooling, thumbnail=False)
    features = keras.Input((int(backbone.output_shape[-1]),), name="features")
    head = keras.Model(features, keras.layers.UnitNormalization(name="l2_normalize", dtype="float32")(features), name="head")
    options = {"weights": choice.path if choice.kind == "file" else rundir.IMAGENET, "image_size": size,
               "feature_layer": feature_layer, "pooling": pooling}
    with atomic_directory(run_dir) as tmp:
        assemble(backbone, head, size).save(tmp / rundir.MODEL_FILE)
        write_config(tmp / rundir.CONFIG_FILE, RunConfig(options=options, versions={"siamcli": __version__, "keras": keras.__version__}))


rundir.register_named_model(rundir.IMAGENET, materialise)
