"""Every run writes TensorBoard logs in <run>/logs: per-step and per-epoch scalars, and the
held-out embeddings of the best epoch for the Embedding Projector (labels and a sprite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from siamcli.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    found: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(directory.glob("events.*")):
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, []).append((event.step, number))
    return found


@pytest.mark.train
def test_a_run_writes_scalars_and_a_projector_export(tmp_path, image_folders):
    from PIL import Image

    from siamcli.training.config import TrainConfig
    from siamcli.training.trainer import train

    data = image_folders("data", identities=6, per_identity=4, size=40)
    config = TrainConfig(data_dir=str(data), image_size=32, embedding_dim=8, weights="none", frozen_epochs=2, finetune_epochs=0,
                         batch_size=8, images_per_identity=2, steps_per_epoch=5, val_fraction=0.34,
                         patience=0, val_image_fraction=0.0)  # every epoch (no early stop, no folds); validation = held-out identities
    result = train(config, out=str(tmp_path / "run"))
    logs = result.run_dir / "logs"
    scalars = _scalars(logs / "train")
    for key in ("loss", "precision_at_1", "map_at_r", "lr", "positive_distance", "negative_distance", "active_fraction", "images_per_second"):
        assert [step for step, _ in scalars[f"epoch/{key}"]] == [1, 2], key
    assert [step for step, _ in scalars["step/loss"]] == [10]  # every 10 batches: 2 epochs × 5
    history = result.history
    assert np.allclose([v for _, v in scalars["epoch/map_at_r"]], history["map_at_r"], atol=1e-6)

    projector = logs / "projector"
    val_images = result.val_images
    rows = (projector / "embeddings.tsv").read_text().splitlines()
    labels = (projector / "metadata.tsv").read_text().splitlines()
    assert len(rows) == len(labels) == val_images and all(len(row.split("\t")) == 8 for row in rows)
    assert set(labels) == set(result.split.val)
    config_text = (projector / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "embeddings.tsv"' in config_text and 'metadata_path: "metadata.tsv"' in config_text
    assert 'image_path: "sprite.png"' in config_text
    sprite = Image.open(projector / "sprite.png")
    cells = int(np.ceil(np.sqrt(val_images)))
    assert sprite.size == (cells * 32, cells * 32)
