"""Facts about Keras's ResNet50 that every layer of siamcli may need: where it can be cut,
how its feature map can be pooled, and which cut and pooling suit which starting weights.

Kept apart from the model-building code (no TensorFlow import), so that options can be
validated and `--help` written without loading TensorFlow.
"""

from __future__ import annotations

WHOLE_NETWORK = "all"  # --finetune-from value: every backbone layer trains
LAST_LAYER = "conv5_block3_out"  # ResNet50's final feature map
MIN_IMAGE_SIZE = 32  # ResNet50 refuses smaller inputs
_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}  # stage → residual blocks

# Where the backbone ends and how it pools, by starting point. ImageNet features are strong
# and general: all of ResNet50, pooled globally. Random weights: a shallower cut with coarse
# spatial pooling measured best on att_faces (docs/training.md).
PRETRAINED_CUT = (LAST_LAYER, "avg")
FROM_SCRATCH_CUT = ("conv3_block4_out", "grid3")


def default_cut(pretrained: bool) -> tuple[str, str]:
    """(feature_layer, pooling) for a backbone that starts pretrained or from scratch."""
    return PRETRAINED_CUT if pretrained else FROM_SCRATCH_CUT


def block_outputs() -> list[str]:
    """Layers a backbone may end at: the output of every residual block, in order."""
    return [f"conv{stage}_block{block}_out" for stage, count in _BLOCKS.items() for block in range(1, count + 1)]


def layer_names() -> list[str]:
    """Keras ResNet50's layer names in order (checked against the real model by the tests)."""
    names = ["input_layer", "conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool"]
    for stage, count in _BLOCKS.items():
        for block in range(1, count + 1):
            prefix = f"conv{stage}_block{block}"
            names += [f"{prefix}_1_conv", f"{prefix}_1_bn", f"{prefix}_1_relu", f"{prefix}_2_conv", f"{prefix}_2_bn", f"{prefix}_2_relu"]
            if block == 1:
                names += [f"{prefix}_0_conv", f"{prefix}_3_conv", f"{prefix}_0_bn", f"{prefix}_3_bn"]
            else:
                names += [f"{prefix}_3_conv", f"{prefix}_3_bn"]
            names += [f"{prefix}_add", f"{prefix}_out"]
    return names
