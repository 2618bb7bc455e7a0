"""The one embedding path: a model and images in, its outputs out, streamed batch by batch.

Every caller embeds through here: validation during training, `index` (and its shards),
`query`, `evaluate`, the baselines, the HTTP service and the notebook API. Images come as file
paths (decoded in parallel by the tf.data pipeline, resized as the model resizes), as an
in-memory (n, h, w, 3) array, as a list of in-memory (h, w, 3) images of any sizes (each resized
as the model resizes, so one traced forward pass serves them all), or as a tf.data dataset of
(position, image, error) elements. Pixels are RGB 0–255 (uint8, or float in that range).
Memory stays flat: one batch of pixels and one of outputs at a time. A file that does not
decode is reported by name, never fatal.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from siamcli.data.pipeline import decoded_dataset, resize_images
from siamcli.data.scan import Skipped
from siamcli.errors import UserError
from siamcli.tf_runtime import import_tensorflow

Progress = Callable[[int], None]  # called with the number of images each batch finished


@dataclass
class EmbeddedBatch:
    positions: np.ndarray  # (b,) input positions of this batch, in input order
    ok: np.ndarray  # (b,) bool: the image decoded
    vectors: np.ndarray | None  # (ok.sum(), d) float32 model outputs; None when there is no model
    pixels: object  # (b, S, S, 3) float32 tensor: what the model saw (raw-pixel baselines read it)
    failures: list[Skipped] = field(default_factory=list)  # the images that did not decode, with why

    @property
    def kept(self) -> np.ndarray:
        return self.positions[self.ok]


@dataclass
class Embedded:
    vectors: np.ndarray  # (n_ok, d) float32, in input order
    kept: list[int]  # input positions of the rows of `vectors`
    failures: list[Skipped]  # images that did not decode, with why


def model_image_size(model) -> int:
    """The side length a saved siamcli model resizes to (read from its Resizing layer)."""
    return int(model.get_layer("resize").height)


def embedding_stream(model, images, batch_size: int = 32, image_size: int | None = None) -> Iterator[EmbeddedBatch]:
    """Yield one EmbeddedBatch per `batch_size` images, prefetching the next batch meanwhile.

    `images`: file paths, a (n, h, w, c) array, a list of (h, w, 3) arrays, or an unbatched
    tf.data dataset of (position, image, error) as `decoded_dataset` makes. `model=None` only decodes.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    tf = import_tensorflow()
    if isinstance(images, np.ndarray):
        batches, spec = _array_batches(tf, images, batch_size), tf.TensorSpec((None, *images.shape[1:]), tf.float32)
    elif _is_image_list(images):
        size = image_size or model_image_size(model)
        batches = _array_batches(tf, images, batch_size, lambda chunk: resize_batch(chunk, size))
        spec = tf.TensorSpec((None, size, size, 3), tf.float32)
    else:
        batches = _batched(tf, model, images, batch_size, image_size)
        spec = batches.element_spec[1]
    forward = _forward(tf, model, spec) if model is not None else None
    names = images if isinstance(images, Sequence) and not isinstance(images, np.ndarray) and not _is_image_list(images) else None
    for positions, pixels, errors in batches:
        positions, errors = positions.numpy(), errors.numpy()
        ok = errors == b""
        vectors = None
        if forward is not None:
            vectors = np.asarray(forward(pixels).numpy(), np.float32)[ok]
        failures = [
            Skipped(names[p] if names is not None else f"image {p}", error.decode()) for p, error in zip(positions[~ok], errors[~ok])
        ]
        yield EmbeddedBatch(positions=positions, ok=ok, vectors=vectors, pixels=pixels, failures=failures)


def embed(model, images, batch_size: int = 32, image_size: int | None = None, on_progress: Progress | None = None) -> Embedded:
    """All of `images` through `model`, collected in memory (see `embedding_stream`)."""
    chunks: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[Skipped] = []
    for batch in embedding_stream(model, images, batch_size, image_size):
        chunks.append(batch.vectors)
        kept.extend(batch.kept.tolist())
        failures.extend(batch.failures)
        if on_progress:
            on_progress(len(batch.positions))
    if chunks:
        vectors = np.concatenate(chunks)
    else:
        vectors = np.zeros((0, int(model.output_shape[-1])), np.float32)
    return Embedded(vectors=vectors, kept=kept, failures=failures)


@dataclass
class LoadedImages:
    images: np.ndarray  # (n_ok, S, S, 3) uint8
    kept: list[int]  # positions in the input list of the images that decoded
    failures: list[Skipped]


def load_pixels(paths: Sequence[str], image_size: int, on_progress: Progress | None = None) -> LoadedImages:
    """Decode and resize every path into one in-memory uint8 array (training sets fit in RAM):
    the embedding path with no model, so training sees exactly the pixels `embed` would."""
    images = np.zeros((len(paths), image_size, image_size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    failures: list[Skipped] = []
    for batch in embedding_stream(None, paths, batch_size=64, image_size=image_size):
        pixels = np.clip(np.round(batch.pixels.numpy()), 0, 255).astype(np.uint8)
        images[batch.kept] = pixels[batch.ok]
        ok[batch.kept] = True
        failures.extend(batch.failures)
        if on_progress:
            on_progress(len(batch.positions))
    return LoadedImages(images=images[ok], kept=np.flatnonzero(ok).tolist(), failures=failures)


def _array_batches(tf, images, batch_size: int, prepare=None):
    """(positions, float32 pixels, errors) slices of in-memory images, without tf.data: there
    is nothing to decode or overlap, and building a pipeline per call costs more than a small
    forward pass (the HTTP service embeds one micro-batch per call). `prepare` turns a slice
    into one array (a list of images of several sizes: resized)."""
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pixels = chunk if prepare is None else prepare(chunk)
        positions = np.arange(start, start + len(chunk), dtype=np.int64)
        errors = np.zeros(len(chunk), dtype="S1")  # b"": every in-memory image is readable
        yield tf.constant(positions), tf.cast(pixels, tf.float32), tf.constant(errors)


def _is_image_list(images) -> bool:
    return isinstance(images, (list, tuple)) and len(images) > 0 and all(isinstance(image, np.ndarray) for image in images)


def resize_batch(images: Sequence[np.ndarray], image_size: int) -> np.ndarray:
    """(n, S, S, 3) float32 of (h, w, 3) RGB 0–255 images of any sizes: the pipeline's resize,
    which is the model's own (so the embeddings are those of each image fed alone), one call per size."""
    out = np.empty((len(images), image_size, image_size, 3), np.float32)
    by_shape: dict[tuple, list[int]] = {}
    for position, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(position)
    for positions in by_shape.values():
        out[positions] = _resizer(image_size)(np.stack([images[p] for p in positions]).astype(np.float32)).numpy()
    return out


@functools.lru_cache(maxsize=4)
def _resizer(image_size: int):
    """The pipeline's resize traced once for any batch of any size (half the eager op's cost)."""
    tf = import_tensorflow()

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    def resize(images):
        return resize_images(tf, images, image_size)

    return resize


def _batched(tf, model, images, batch_size: int, image_size: int | None):
    if isinstance(images, tf.data.Dataset):
        dataset = images
    else:
        size = image_size or model_image_size(model)
        dataset = decoded_dataset(list(images), size)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# One traced forward pass per model and input shape, kept as long as the model lives: tracing
# ResNet50 costs seconds of CPU, which every validation epoch or served batch would pay again.
_FORWARDS: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def _forward(tf, model, spec):
    shape = tuple(spec.shape[1:])
    cache = _FORWARDS.setdefault(model, {})
    if shape not in cache:
        signature = [tf.TensorSpec((None, *shape), tf.float32)]  # any batch size, one trace

        @tf.function(input_signature=signature)
        def forward(pixels):
            return model(pixels, training=False)

        cache[shape] = forward
    return cache[shape]
