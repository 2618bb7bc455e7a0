"""Custom layers that live inside the saved model.

They are registered classes (not Lambda layers), so `model.keras` loads with Keras's
`safe_mode=True`: no arbitrary code is deserialised.
"""

from __future__ import annotations

from siamcli.tf_runtime import import_tensorflow

import_tensorflow()
import keras  # noqa: E402

# ImageNet channel means in BGR order, as keras.applications.resnet50.preprocess_input uses.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="siamcli")
class ResNetPreprocess(keras.layers.Layer):
    """RGB pixels in [0, 255] → ResNet50's input ('caffe' mode: BGR, ImageNet mean removed)."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        mean = keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=bgr.dtype)
        return bgr - mean

    def compute_output_shape(self, input_shape):
        return input_shape
