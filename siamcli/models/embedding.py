"""Building, assembling, freezing and loading the embedding network.

    image (any size, RGB 0–255) → Resizing(S) → resnet_preprocess (fixed 1×1 conv: BGR, means removed)
        → ResNet50 up to `feature_layer`
        → pooling (global average, or an N×N grid of averages that keeps coarse layout)
        ⊕ a 16×16 RGB thumbnail of the resized image itself (area averages, 768 values)
        → head: BatchNorm → Dropout → Dense(embedding_dim) → L2-normalise → embedding (unit length)

Every layer is one of Keras's own, so `model.keras` loads with plain
`keras.saving.load_model(path, safe_mode=True)`, without siamcli (tests/test_portable_model.py).

The backbone (everything up to the pooled features) and the head are separate sub-models so
the frozen phase can train the head on cached backbone features. With ImageNet weights the
whole ResNet50 and global average pooling are the right default; with random weights
(`--weights none`) the deep, globally pooled features carry little, and an earlier layer
with grid pooling is what measured best (docs/training.md).

The thumbnail rides along so that the pixels themselves are always within the head's reach:
on some data (small, centred drawings such as handwritten digits) raw pixels retrieve better
than an untrained or badly transferred backbone, and the start model
(training/start_model.py) weighs the two blocks by what validation measures. It has no
weights; the CNN features come first and the thumbnail's THUMBNAIL_DIM values last.
"""

from __future__ import annotations

from pathlib import Path

from siamcli.choices import Pooling
from siamcli.errors import CorruptArtifactError, UserError
from siamcli.models.backbone_weights import WeightsChoice

# Importing layers also registers ResNetPreprocess, so models saved by siamcli 0.1.0 still load.
from siamcli.models.layers import PREPROCESS_LAYER, resnet_preprocess, set_preprocess_weights
from siamcli.models.resnet50 import LAST_LAYER, MIN_IMAGE_SIZE, WHOLE_NETWORK, block_outputs
from siamcli.tf_runtime import import_tensorflow

import_tensorflow()
import keras  # noqa: E402

THUMBNAIL_SIDE = 16
THUMBNAIL_DIM = THUMBNAIL_SIDE * THUMBNAIL_SIDE * 3


def build_backbone(image_size: int, weights: WeightsChoice, feature_layer: str = LAST_LAYER, pooling: str = "avg",
                   thumbnail: bool = True) -> keras.Model:
    """(batch, S, S, 3) pixels in [0, 255] → (batch, features): pooled ResNet50 features, then
    (with `thumbnail`) the image's THUMBNAIL_DIM thumbnail values."""
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size must be at least {MIN_IMAGE_SIZE} (ResNet50's smallest input), got {image_size}")
    if feature_layer not in block_outputs():
        raise UserError(f"--feature-layer {feature_layer!r} is not a ResNet50 block output; use one of {', '.join(block_outputs())}")
    Pooling.check(pooling, "--pooling")
    resnet = keras.applications.ResNet50(
        include_top=False,
        weights="imagenet" if weights.kind == "imagenet" else None,
        input_shape=(image_size, image_size, 3),
    )
    if weights.kind == "file":
        try:
            resnet.load_weights(weights.path)
        except Exception as exc:  # Keras raises many types for a wrong file
            raise UserError(
                f"cannot load ResNet50 weights from {weights.path} ({str(exc).splitlines()[0][:160]}); "
                "give a Keras weights file (.weights.h5) saved from ResNet50(include_top=False)"
            ) from exc
    if feature_layer != LAST_LAYER:
        resnet = keras.Model(resnet.input, resnet.get_layer(feature_layer).output, name="resnet50")
    pixels = keras.Input((image_size, image_size, 3), name="pixels")
    preprocess = resnet_preprocess()
    features = resnet(preprocess(pixels))
    set_preprocess_weights(preprocess)
    if pooling == "avg":
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    else:
        cells = int(pooling[len("grid"):])
        features = keras.layers.AdaptiveAveragePooling2D((cells, cells), name="pool")(features)
        features = keras.layers.Flatten(name="flatten")(features)
    if thumbnail:
        small = keras.layers.AdaptiveAveragePooling2D((THUMBNAIL_SIDE, THUMBNAIL_SIDE), name="thumbnail")(pixels)
        small = keras.layers.Flatten(name="thumbnail_flatten")(small)
        features = keras.layers.Concatenate(name="features_and_thumbnail")([features, small])
    return keras.Model(pixels, features, name="backbone")


def thumbnail_dims(backbone: keras.Model) -> int:
    """How many of the backbone's last outputs are the thumbnail (0 for a backbone built without one)."""
    names = {layer.name for layer in backbone.layers}
    return THUMBNAIL_DIM if "thumbnail" in names else 0


def build_head(embedding_dim: int, feature_dim: int, dropout: float = 0.0) -> keras.Model:
    """(batch, feature_dim) → (batch, embedding_dim) unit-length embeddings, always float32."""
    features = keras.Input((feature_dim,), name="features")
    # Normalising the features first keeps the head stable whatever their scale (a random
    # backbone's features are far from ImageNet's).
    x = keras.layers.BatchNormalization(name="feature_norm")(features)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(embedding_dim, name="projection", dtype="float32")(x)
    embedding = keras.layers.UnitNormalization(name="l2_normalize", dtype="float32")(x)
    return keras.Model(features, embedding, name="head")


def assemble(backbone: keras.Model, head: keras.Model, image_size: int) -> keras.Model:
    """The saved model: images of any size in, embeddings out; resizing lives inside."""
    images = keras.Input((None, None, 3), name="image")
    resized = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", antialias=True, name="resize")(images)
    return keras.Model(images, head(backbone(resized)), name="siamcli_embedding")


def resnet_of(backbone: keras.Model) -> keras.Model:
    return backbone.get_layer("resnet50")


def set_backbone_trainable(backbone: keras.Model, finetune_from: str | None, train_batchnorm: bool) -> None:
    """Freeze the backbone (finetune_from=None) or unfreeze it from layer `finetune_from` on.

    BatchNorm layers stay frozen, and so in inference mode, unless `train_batchnorm`: their
    statistics come from the pretrained weights and small triplet batches would spoil them.
    """
    resnet = resnet_of(backbone)
    names = [layer.name for layer in resnet.layers]
    if finetune_from is None:
        backbone.trainable = False
        return
    backbone.trainable = True
    _keep_preprocess_fixed(backbone)
    if finetune_from == WHOLE_NETWORK:
        start = 0
    elif finetune_from in names:
        start = names.index(finetune_from)
    else:
        close = [n for n in names if n.endswith("_out")][-6:]
        raise UserError(
            f"--finetune-from {finetune_from!r} is not a ResNet50 layer; use '{WHOLE_NETWORK}' or a layer "
            f"name such as {', '.join(close)}"
        )
    for position, layer in enumerate(resnet.layers):
        trainable = position >= start
        if isinstance(layer, keras.layers.BatchNormalization) and not train_batchnorm:
            trainable = False
        layer.trainable = trainable


def _keep_preprocess_fixed(backbone: keras.Model) -> None:
    """`backbone.trainable = True` unfreezes every sub-layer; the preprocessing conv is a constant."""
    if any(layer.name == PREPROCESS_LAYER for layer in backbone.layers):
        backbone.get_layer(PREPROCESS_LAYER).trainable = False


def load_embedding_model(path: str | Path) -> keras.Model:
    """Load a saved `model.keras` with safe_mode (no arbitrary code), or explain why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found; train one with `siamcli train DATA_DIR` or pass --model RUN_DIR")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise CorruptArtifactError(
            f"cannot load model {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
            "it is damaged or not a siamcli model: retrain or restore it"
        ) from exc
