"""Baselines scored beside the trained model, so a report shows what training bought.

start_model         <run>/start.keras: the run's own network before any training step (the
                    trainer writes it; runs of earlier releases lack it, and the column is then
                    left out with a warning). Embedded by the one embedding loop, as model.keras.
raw_pixels          each image decoded and resized exactly as the model sees it (S × S RGB,
                    bilinear, antialiased), flattened and scaled to [0, 1]; compared by plain
                    squared Euclidean distance, not normalised (mean-centring would change no
                    distance). On att_faces s21–s40 at 96 px: MAP@R 0.658, precision@1 0.990.
untrained_backbone  the ResNet50 the run started from, before any training: pooled 2048-d
                    features, L2-normalised. `--weights none` runs: random initialisation from
                    the run's seed (the same weights its training began with); imagenet runs:
                    the ImageNet weights if Keras has them cached (never downloaded here);
                    `--weights PATH` runs: that file if it is still there. Otherwise skipped,
                    with the reason.

The last two are computed from one more pass over the images (decoded by the same pipeline), and
only when their feature matrix fits in `memory_bytes`; past that they are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

START_MODEL = "start_model"
RAW_PIXELS = "raw_pixels"
UNTRAINED_BACKBONE = "untrained_backbone"
BASELINE_ORDER = (START_MODEL, UNTRAINED_BACKBONE, RAW_PIXELS)  # columns, metrics.json, ties of the verdict
NAMES = {START_MODEL: "start model", RAW_PIXELS: "raw pixels", UNTRAINED_BACKBONE: "untrained backbone"}
START_NOT_RECORDED = "not recorded (trained by an earlier release)"
DEFAULT_MEMORY_BYTES = 2 << 30  # largest feature matrix a baseline may hold


@dataclass
class BaselineFeatures:
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name → (n, d) float32
    descriptions: dict[str, str] = field(default_factory=dict)  # name → what exactly was scored
    skipped: dict[str, str] = field(default_factory=dict)  # name → why it was not


def start_model_features(path: Path, paths: Sequence[str], batch_size: int = 32,
                         on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray | None, str]:
    """(embeddings of `paths` by the start model, description), or (None, why it was skipped)."""
    from siamcli.errors import UserError
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model

    if not path.is_file():
        return None, START_NOT_RECORDED
    try:
        network = load_embedding_model(path)
    except UserError as exc:  # a damaged start.keras costs its column, not the evaluation
        return None, str(exc)
    embedded = embed(network, list(paths), batch_size=batch_size, on_progress=on_progress)
    if embedded.failures:  # a file changed on disk since the model embedded it
        return None, f"{len(embedded.failures)} image(s) no longer decode, e.g. {embedded.failures[0].path}"
    return embedded.vectors, f"the run's network before any training step ({path})"


def backbone_start(config: dict) -> tuple[object | None, str]:
    """(WeightsChoice for the run's starting backbone or None, description or reason skipped)."""
    from siamcli.models.backbone_weights import IMAGENET_NOTOP_FILE, WeightsChoice, keras_cache_dir

    spec = str(config.get("weights", "none")).strip()
    seed = int(config.get("seed", 0))
    if spec.lower() == "none":
        return WeightsChoice("none", None), f"ResNet50, random initialisation (seed {seed}), untrained"
    if spec.lower() == "imagenet":
        cached = keras_cache_dir() / IMAGENET_NOTOP_FILE
        if cached.is_file():
            return WeightsChoice("imagenet", str(cached)), "ResNet50, ImageNet weights, no metric training"
        return None, f"ImageNet weights are not cached ({cached}); nothing is downloaded during evaluation"
    if Path(spec).is_file():
        return WeightsChoice("file", spec), f"ResNet50 with the run's starting weights {spec}, no metric training"
    return None, f"the run's starting weights file {spec} is gone"


def baseline_features(
    paths: Sequence[str],
    image_size: int,
    config: dict,
    batch_size: int = 32,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> BaselineFeatures:
    """Raw-pixel and untrained-backbone features of `paths` (which must all decode), in order.

    One pass through the embedding path: the untrained backbone embeds each batch while the
    raw-pixel baseline keeps the very pixels it saw.
    """
    from siamcli.models.embed import embedding_stream

    result = BaselineFeatures()
    n = len(paths)
    raw_dim = image_size * image_size * 3
    want_raw = n * raw_dim * 4 <= memory_bytes
    if not want_raw:
        result.skipped[RAW_PIXELS] = f"{n} images × {raw_dim} pixel values would need {n * raw_dim * 4 / 2**30:.1f} GiB"
    choice, description = backbone_start(config)
    backbone = None
    if choice is None:
        result.skipped[UNTRAINED_BACKBONE] = description
    else:
        backbone = build_untrained_backbone(image_size, choice, config)
        width = int(backbone.output_shape[-1])
        if n * width * 4 > memory_bytes:
            result.skipped[UNTRAINED_BACKBONE] = f"{n} images × {width} features would not fit in memory"
            backbone = None
        else:
            result.descriptions[UNTRAINED_BACKBONE] = description
    if not want_raw and backbone is None:
        return result

    raw = np.zeros((n, raw_dim), np.float32) if want_raw else None
    pooled = np.zeros((n, int(backbone.output_shape[-1])), np.float32) if backbone is not None else None
    failed = []
    for batch in embedding_stream(backbone, list(paths), batch_size, image_size):
        failed.extend(batch.positions[~batch.ok].tolist())
        if raw is not None:
            raw[batch.positions] = batch.pixels.numpy().reshape(len(batch.positions), -1) / 255.0
        if pooled is not None:
            pooled[batch.kept] = batch.vectors
        if on_progress:
            on_progress(len(batch.positions))
    if failed:  # a file changed on disk since the model embedded it: the baselines would not line up
        reason = f"{len(failed)} image(s) no longer decode, e.g. {paths[failed[0]]}"
        result.skipped.update({RAW_PIXELS: reason, UNTRAINED_BACKBONE: reason})
        result.descriptions.clear()
        return result
    if raw is not None:
        result.features[RAW_PIXELS] = raw
        result.descriptions[RAW_PIXELS] = f"pixels at {image_size}×{image_size}, flattened, scaled to [0, 1], Euclidean"
    if pooled is not None:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result.features[UNTRAINED_BACKBONE] = pooled / np.maximum(norms, 1e-12)
    return result


def build_untrained_backbone(image_size: int, choice, config: dict):
    """The backbone as `siamcli train` builds it before its first step (same seed, weights, cut and pooling)."""
    from siamcli.tf_runtime import import_tensorflow

    import_tensorflow()
    import keras

    from siamcli.models.embedding import build_backbone
    from siamcli.models.resnet50 import default_cut

    # config.json records the resolved cut; the regime's default stands in for older runs.
    feature_layer, pooling = default_cut(choice.pretrained)
    keras.utils.set_random_seed(int(config.get("seed", 0)))
    return build_backbone(image_size, choice, config.get("feature_layer") or feature_layer, config.get("pooling") or pooling,
                          thumbnail=False)  # the backbone's own features: raw pixels are the other baseline
