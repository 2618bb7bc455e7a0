"""TensorBoard logs of a training run, in `<run>/logs/` (`tensorboard --logdir runs` shows every run).

    logs/train/events.*          scalars every `every_steps` batches: step/loss, step/images_per_second
                                 and per epoch: epoch/loss, epoch/precision_at_1, epoch/map_at_r, epoch/lr,
                                 epoch/positive_distance, epoch/negative_distance, epoch/active_fraction,
                                 epoch/images_per_second (x axis: batches trained so far / epoch number)
    logs/projector/              the held-out images' embeddings at the kept epoch (the one model.keras
                                 holds) for the Embedding Projector: embeddings.tsv, metadata.tsv
                                 (identity names), sprite.png (thumbnails), projector_config.pbtxt

The trainer calls `step` after each batch and `epoch` after each epoch; nothing here changes
what is trained. Scalars need the `tensorboard` package (TensorFlow no longer installs it): without
it the projector files are still written and one message says why there are no curves.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from siamcli.atomic import write_bytes, write_text
from siamcli.tf_runtime import import_tensorflow

LOGS = "logs"
EPOCH_KEYS = ("loss", "precision_at_1", "map_at_r", "lr", "positive_distance", "negative_distance",
              "active_fraction", "images_per_second")
SPRITE_MAX = 8192  # TensorBoard's limit on a sprite's side, in pixels
THUMBNAIL = 32  # side of one sprite thumbnail


class TrainingLog:
    """Writes one run's TensorBoard scalars and projector files; `enabled=False` writes nothing."""

    def __init__(self, run_dir: Path, every_steps: int = 10, enabled: bool = True):
        self.directory = Path(run_dir) / LOGS
        self.every_steps = max(1, every_steps)
        self.writer = None
        self.problem: str | None = None
        self.enabled = enabled  # False on the other workers of a multi-worker run
        if not enabled:
            return
        tf = import_tensorflow()
        if not hasattr(tf.summary, "scalar"):  # TensorFlow's own summary ops come from the tensorboard package
            self.problem = "TensorBoard curves are not written: install the tensorboard package (pip install tensorboard)"
            return
        self.writer = tf.summary.create_file_writer(str(self.directory / "train"))

    def step(self, global_step: int, loss: float, images_per_second: float) -> None:
        if self.writer is None or global_step % self.every_steps:
            return
        tf = import_tensorflow()
        with self.writer.as_default(step=global_step):
            tf.summary.scalar("step/loss", loss)
            tf.summary.scalar("step/images_per_second", images_per_second)

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        tf = import_tensorflow()
        with self.writer.as_default(step=int(row["epoch"])):
            for key in EPOCH_KEYS:
                value = row.get(key)
                if value is not None and math.isfinite(float(value)):
                    tf.summary.scalar(f"epoch/{key}", float(value))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_projector(directory: Path, embeddings: np.ndarray, labels: list[str], images: np.ndarray | None) -> None:
    """The Embedding Projector's files for `embeddings` (n, d), one label and thumbnail per row."""
    directory = Path(directory)
    write_text(directory / "embeddings.tsv", "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in embeddings))
    write_text(directory / "metadata.tsv", "".join(_tsv_cell(label) + "\n" for label in labels))  # one column: no header
    sprite = ""
    if images is not None and len(images):
        side = _sprite(directory / "sprite.png", images)
        sprite = f'  sprite {{\n    image_path: "sprite.png"\n    single_image_dim: {side}\n    single_image_dim: {side}\n  }}\n'
    write_text(directory / "projector_config.pbtxt",
               'embeddings {\n  tensor_name: "validation"\n  tensor_path: "embeddings.tsv"\n  metadata_path: "metadata.tsv"\n' + sprite + "}\n")


def _tsv_cell(text: str) -> str:
    return " ".join(str(text).split()) or "(none)"


def _sprite(path: Path, images: np.ndarray) -> int:
    """A square grid of thumbnails in row order (row i of the embeddings ↔ cell i); returns the cell side."""
    import io

    from PIL import Image

    columns = math.ceil(math.sqrt(len(images)))
    side = min(THUMBNAIL, SPRITE_MAX // columns)
    sheet = Image.new("RGB", (columns * side, columns * side))
    for i, image in enumerate(images):
        thumbnail = Image.fromarray(np.asarray(image, np.uint8)).resize((side, side), Image.BILINEAR)
        sheet.paste(thumbnail, ((i % columns) * side, (i // columns) * side))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
    return side
