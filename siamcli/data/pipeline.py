"""tf.data pipelines: decoding files in parallel, P×K training batches, batches to embed.

Decoding runs Pillow inside `tf.numpy_function` on tf.data's parallel map, so files decode on
all cores while the model computes. Resizing uses the same TensorFlow op (bilinear, antialiased)
as the `Resizing` layer inside the saved model, so a raw image fed to the model and an image
fed through this pipeline give the same embedding.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from siamcli.data.decode import DecodeError, decode_image
from siamcli.tf_runtime import import_tensorflow


def resize_images(tf, images, image_size: int):
    """(h, w, 3) or (batch, h, w, 3) pixels in [0, 255] → float32 at image_size²."""
    return tf.image.resize(tf.cast(images, tf.float32), (image_size, image_size), method="bilinear", antialias=True)


def _decode_or_reason(path: bytes) -> tuple[np.ndarray, bytes]:
    try:
        return decode_image(path.decode("utf-8", errors="surrogateescape")), b""
    except DecodeError as exc:
        return np.zeros((1, 1, 3), np.uint8), exc.reason.encode()


def decoded_dataset(paths: Sequence[str], image_size: int):
    """Dataset of (position, image float32 (S, S, 3), error): error is b"" when it decoded.

    Failed files yield a black placeholder and their reason, so the consumer can report them
    by name; order is kept (deterministic) so positions line up with `paths`.
    """
    tf = import_tensorflow()

    def load(position, path):
        image, error = tf.numpy_function(_decode_or_reason, [path], (tf.uint8, tf.string), stateful=False)
        image.set_shape([None, None, 3])
        error.set_shape([])
        return position, resize_images(tf, image, image_size), error

    encoded = [p.encode("utf-8", errors="surrogateescape") for p in paths]
    positions = np.arange(len(paths), dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((positions, tf.constant(encoded, dtype=tf.string)))
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class PKSampler:
    """Index batches of P identities × K images each, reproducible from `seed`.

    Identities with fewer than K images are topped up by repeating images; the loss never
    pairs an image with its own copy, so such repeats (and single-image identities, which
    can then only be negatives) add no false positives.
    """

    def __init__(self, labels: np.ndarray, identities_per_batch: int, images_per_identity: int, seed: int):
        self.labels = np.asarray(labels)
        self.by_identity = [np.flatnonzero(self.labels == value) for value in np.unique(self.labels)]
        self.p = min(identities_per_batch, len(self.by_identity))
        self.k = images_per_identity
        self.rng = np.random.default_rng(seed)

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def next_batch(self) -> np.ndarray:
        chosen = self.rng.choice(len(self.by_identity), size=self.p, replace=False)
        parts = []
        for identity in chosen:
            members = self.by_identity[identity]
            if len(members) >= self.k:
                parts.append(self.rng.choice(members, size=self.k, replace=False))
            else:
                extra = self.rng.choice(members, size=self.k - len(members), replace=True)
                parts.append(np.concatenate([self.rng.permutation(members), extra]))
        return np.concatenate(parts)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next_batch()


def pk_batches(
    inputs: np.ndarray,
    labels: np.ndarray,
    sampler: PKSampler,
    steps: int,
    augment: bool,
    seed: int,
    views: int = 1,
):
    """tf.data of (inputs, label ids, image ids) P×K batches; `inputs` are images or features.

    `views`: `inputs` is (views, n, ...) — several cached views of every image (features of
    augmented copies); each sampled image then comes as one of its views, drawn from (seed, step).
    The sampler runs in a generator (cheap index work); gathering and augmentation run in
    tf.data, prefetched so the model never waits on them.
    """
    tf = import_tensorflow()
    labels = np.asarray(labels, np.int32)

    def indices():
        for _, batch in zip(range(steps), sampler):
            yield batch.astype(np.int64)

    inputs_t = tf.constant(inputs) if inputs.nbytes < (1 << 30) else tf.Variable(inputs, trainable=False)
    labels_t = tf.constant(labels)
    dataset = tf.data.Dataset.from_generator(
        indices, output_signature=tf.TensorSpec([sampler.batch_size], tf.int64)
    )

    def gather(index):
        return tf.gather(inputs_t, index), tf.gather(labels_t, index), tf.cast(index, tf.int32)

    if views > 1:
        def gather_view(step, index):
            draw = tf.random.stateless_uniform(
                tf.shape(index), seed=tf.stack([tf.cast(seed, tf.int64), step]), maxval=views, dtype=tf.int64
            )
            picked = tf.gather_nd(inputs_t, tf.stack([draw, index], axis=1))
            return picked, tf.gather(labels_t, index), tf.cast(index, tf.int32)

        dataset = dataset.enumerate().map(gather_view, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        dataset = dataset.enumerate().map(
            lambda step, batch: (augment_images(tf, batch[0], seed, step),) + batch[1:],
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        dataset = dataset.map(lambda x, y, i: (tf.cast(x, tf.float32), y, i))
    return dataset.prefetch(tf.data.AUTOTUNE)


def augment_images(tf, images, seed: int, step):
    """Light, identity-preserving augmentation: mirror, small shift and zoom, brightness.

    Stateless ops seeded by (seed, step) make a run reproducible.
    """
    images = tf.cast(images, tf.float32)
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1]
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    flip = tf.random.stateless_uniform([batch, 1, 1, 1], seed=base) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    # Random crop of 85–100 % of the side, resized back: small shifts and zooms.
    scale = tf.random.stateless_uniform([batch], seed=base + 1, minval=0.85, maxval=1.0)
    offset_y = tf.random.stateless_uniform([batch], seed=base + 2) * (1.0 - scale)
    offset_x = tf.random.stateless_uniform([batch], seed=base + 3) * (1.0 - scale)
    boxes = tf.stack([offset_y, offset_x, offset_y + scale, offset_x + scale], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.stack([size, size]))
    brightness = tf.random.stateless_uniform([batch, 1, 1, 1], seed=base + 4, minval=0.8, maxval=1.2)
    return tf.clip_by_value(images * brightness, 0.0, 255.0)
