"""Embedding folders of images with a trained model, streamed batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from siamcli.data.pipeline import embedding_batches
from siamcli.data.scan import Skipped
from siamcli.tf_runtime import import_tensorflow


@dataclass
class EmbeddedImages:
    embeddings: np.ndarray  # (n_ok, dim) float32, unit length
    kept: list[int]  # positions in the input list of the images that decoded
    failures: list[Skipped]  # images that did not decode, with why


def model_image_size(model) -> int:
    """The side length the saved model resizes to (read from its Resizing layer)."""
    return int(model.get_layer("resize").height)


def embed_paths(
    model,
    paths: Sequence[str],
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
    image_size: int | None = None,
) -> EmbeddedImages:
    """Embed every path; memory stays flat (one batch of pixels at a time)."""
    tf = import_tensorflow()
    size = image_size or model_image_size(model)
    dim = int(model.output_shape[-1])

    @tf.function(reduce_retracing=True)
    def forward(images):
        return model(images, training=False)

    chunks: list[np.ndarray] = []
    kept: list[int] = []
    failures: list[Skipped] = []
    for positions, images, errors in embedding_batches(paths, size, batch_size):
        vectors = forward(images).numpy().astype(np.float32)
        good = errors.numpy() == b""
        for position, error in zip(positions.numpy()[~good], errors.numpy()[~good]):
            failures.append(Skipped(paths[position], error.decode()))
        chunks.append(vectors[good])
        kept.extend(positions.numpy()[good].tolist())
        if on_progress:
            on_progress(len(good))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return EmbeddedImages(embeddings=embeddings, kept=kept, failures=failures)
