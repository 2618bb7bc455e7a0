"""ResNet50's input preprocessing ('caffe' mode: RGB → BGR, ImageNet channel means removed),
built from Keras's own layers so that `model.keras` loads anywhere Keras does.

New models do it with one fixed, non-trainable 1×1 `Conv2D` (`resnet_preprocess`): its
kernel is the RGB → BGR permutation and its bias minus the BGR means, so each output channel is
1·x + 0·y + 0·z − mean, bit for bit what `keras.applications.resnet50.preprocess_input` computes.
A built-in layer means `keras.saving.load_model(path, safe_mode=True)` needs no siamcli import
and no custom object (issue 16: loading failed with "Could not locate class 'ResNetPreprocess'").

`ResNetPreprocess`, the custom layer models of siamcli 0.1.0 were saved with, stays registered
(importing this module registers it) so that those models still load in siamcli.
"""

from __future__ import annotations

import numpy as np

from siamcli.tf_runtime import import_tensorflow

import_tensorflow()
import keras  # noqa: E402

# ImageNet channel means in BGR order, as keras.applications.resnet50.preprocess_input uses.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESS_LAYER = "resnet_preprocess"


def resnet_preprocess(name: str = PREPROCESS_LAYER) -> keras.layers.Conv2D:
    """A 1×1 convolution, frozen, that maps RGB pixels in [0, 255] to ResNet50's BGR, mean-removed input.

    Its weights are set by `set_preprocess_weights` once the layer is built (call it on an
    input first). It computes in float32 whatever the global dtype policy, as the pixels do.
    """
    return keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, dtype="float32", name=name)


def preprocess_weights() -> list[np.ndarray]:
    """[kernel (1, 1, 3 in, 3 out), bias (3,)]: output channel c reads input channel 2 − c."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_channel in range(3):
        kernel[0, 0, 2 - out_channel, out_channel] = 1.0
    return [kernel, -np.asarray(_CAFFE_MEAN_BGR, np.float32)]


def set_preprocess_weights(layer: keras.layers.Conv2D) -> None:
    layer.set_weights(preprocess_weights())


@keras.saving.register_keras_serializable(package="siamcli")
class ResNetPreprocess(keras.layers.Layer):
    """The preprocessing layer of siamcli 0.1.0 models, kept so they still load (new models do not use it).

    RGB pixels in [0, 255] → ResNet50's input ('caffe' mode: BGR, ImageNet mean removed).
    """

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        mean = keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=bgr.dtype)
        return bgr - mean

    def compute_output_shape(self, input_shape):
        return input_shape
