"""`--format savedmodel`: signatures `serving_default` (encoded image bytes) and `embed_pixels`
(uint8 pixels of any size), each checked through the reloaded SavedModel as a server calls it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from siamcli.export.check import CHECK_ROWS, TOLERANCE, max_diff, reference
from siamcli.export.result import ExportResult
from siamcli.export.samples import Samples
from siamcli.quiet import quietly
from siamcli.tf_runtime import import_tensorflow


def write(model, size: int, tmp: Path, sample: Samples, expected: np.ndarray, quantize: bool) -> ExportResult:
    """The SavedModel in `tmp`, reloaded and measured against `expected` (model.keras's embeddings)."""
    _write_archive(model, size, tmp)
    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(tmp))
    rows = sample.pixels[:CHECK_ROWS]
    by_pixels = loaded.signatures["embed_pixels"](pixels=tf.constant(rows))["embedding"].numpy()
    encoded = tf.constant([_png(image) for image in rows])
    by_bytes = loaded.signatures["serving_default"](images=encoded)["embedding"].numpy()
    odd = np.random.default_rng(1).integers(0, 256, (2, size + 13, size + 5, 3), dtype=np.uint8)  # resized inside
    odd_diff = max_diff(loaded.signatures["embed_pixels"](pixels=tf.constant(odd))["embedding"].numpy(), reference(model, odd))
    d = int(expected.shape[1])
    return ExportResult(
        format="savedmodel", out=tmp, files={},
        inputs={"serving_default": {"images": f"tf.string (batch,): encoded JPEG/PNG/GIF/BMP bytes, RGB; resized to {size}x{size} inside"},
                "embed_pixels": {"pixels": "uint8 (batch, height, width, 3) RGB, any size (resized inside)"}},
        outputs={"embedding": f"float32 (batch, {d}), unit length"},
        samples=len(rows), sample_source=sample.source,
        max_abs_diff={"embed_pixels": max_diff(by_pixels, expected[: len(rows)]),
                      "embed_pixels, other sizes": odd_diff,
                      "serving_default (PNG bytes)": max_diff(by_bytes, expected[: len(rows)])},
        tolerance=TOLERANCE,
        notes=["JPEG bytes are decoded by TensorFlow, not Pillow as siamcli does: expect differences of the order of JPEG's "
               "own rounding, and no EXIF rotation"],
    )


def _write_archive(model, size: int, tmp: Path) -> None:
    tf = import_tensorflow()
    import keras

    archive = keras.export.ExportArchive()
    # No archive.track(model): the variables the endpoints use are saved by themselves; tracking the
    # model too would store every weight twice (as Keras variables and as tf.Variables).

    def embed_pixels(pixels):
        return {"embedding": model(tf.cast(pixels, tf.float32), training=False)}

    def embed_images(images):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear", antialias=True)

        pixels = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
        return {"embedding": model(pixels, training=False)}

    archive.add_endpoint("serving_default", embed_images, input_signature=[tf.TensorSpec((None,), tf.string, name="images")])
    archive.add_endpoint("embed_pixels", embed_pixels, input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="pixels")])
    quietly(lambda: archive.write_out(str(tmp), verbose=False))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
