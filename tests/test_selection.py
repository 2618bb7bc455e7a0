"""Model selection against the start model, the data-dependent defaults, the frozen phase's folds (issue 12)."""

import json

import numpy as np
import pytest
from PIL import Image

from siamcli.training import adaptive
from siamcli.training.config import TrainConfig
from siamcli.training.start_model import START_EPOCH, prefer, verdict


def test_a_trained_epoch_replaces_the_start_on_a_tie_but_not_an_earlier_trained_epoch():
    assert prefer(0.8, 0.8, START_EPOCH) and not prefer(0.79, 0.8, START_EPOCH)
    assert not prefer(0.8, 0.8, 3) and prefer(0.81, 0.8, 3)
    assert prefer(0.1, float("-inf"), None)


def test_the_verdict_is_one_line_that_names_the_kept_model():
    start = {"map_at_r": 0.9, "precision_at_1": 1.0}
    kept_start = verdict(start, START_EPOCH, start, [0.85, 0.8])
    assert "no trained epoch beat the start model" in kept_start and "0.850" in kept_start and "\n" not in kept_start
    assert "kept epoch 2" in verdict(start, 2, {"map_at_r": 0.95}, [0.9, 0.95]) and "+0.050" in verdict(start, 2, {"map_at_r": 0.95}, [0.95])
    assert verdict({}, 1, {}, [0.5]) is None
    below = verdict(start, 2, {"map_at_r": 0.88, "phase": "frozen"}, [0.85, 0.88], [0.7, 0.75, 0.8])  # the folds' choice
    assert "(-0.020, below the start on validation)" in below and "chosen by identity folds" in below
    assert "below" not in verdict(start, 2, {"map_at_r": 0.9}, [0.85, 0.9])  # a tie is not below


def test_defaults_adapt_to_the_number_of_identities():
    scratch = TrainConfig(data_dir="d", weights="none")
    few = adaptive.adapt(scratch, train_identities=16, val_identities=4)
    assert (few.weight_decay, few.patience, few.finetune_patience, few.val_image_fraction) == (5e-2, 3, 1, 0.2)
    many = adaptive.adapt(scratch, train_identities=400, val_identities=100)
    assert (many.weight_decay, many.val_image_fraction) == (1e-2, 0.0)
    assert adaptive.adapt(TrainConfig(data_dir="d"), 16, 4).finetune_patience == 2  # pretrained
    assert adaptive.adapt(scratch, 2, 0).val_image_fraction == 0.0  # nothing held out: nothing to add to
    given = adaptive.adapt(TrainConfig(data_dir="d", weights="none", patience=0, weight_decay=0.0, val_image_fraction=0.5), 16, 4)
    assert (given.patience, given.finetune_patience, given.weight_decay, given.val_image_fraction) == (0, 0, 0.0, 0.5)


def test_held_out_images_of_training_identities_leave_two_to_train_on():
    labels = ["a"] * 10 + ["b"] * 3 + ["c"] * 2 + ["v"] * 10
    mask = adaptive.held_out_images(labels, {"a", "b", "c"}, 0.2, seed=0)
    held = [label for label, h in zip(labels, mask) if h]
    assert held.count("a") == 2 and held.count("b") == 1 and "c" not in held and "v" not in held
    assert np.array_equal(mask, adaptive.held_out_images(labels, {"a", "b", "c"}, 0.2, seed=0))  # seeded


def test_folds_split_identities_and_the_best_epoch_prefers_training_on_ties():
    from siamcli.training import folds

    labels = np.repeat(np.arange(6), 3)
    assignment = folds.fold_assignment(labels, seed=0)
    for identity in range(6):
        assert len(set(assignment[labels == identity])) == 1  # a whole identity in one fold
    assert sorted(np.bincount(assignment)) == [9, 9]
    assert folds.fold_assignment(np.repeat(np.arange(3), 3), seed=0) is None  # too few identities for two folds
    assert folds.best_epoch([0.9, 0.85, 0.8]) == 0 and folds.best_epoch([0.8, 0.8, 0.79]) == 1 and folds.best_epoch([0.7, 0.8, 0.9]) == 2


def _principal_directions(block: np.ndarray, dims: int) -> np.ndarray:
    """(d, dims): the first `dims` principal directions of `block` by numpy's SVD (not the code
    under test's eigen-decomposition), each signed so that its largest entry is positive."""
    _, _, rows = np.linalg.svd(block - block.mean(axis=0), full_matrices=False)
    directions = rows[:dims].T
    return directions * np.sign(directions[np.abs(directions).argmax(axis=0), np.arange(dims)])


def test_the_start_head_standardises_features_centres_pixels_and_weighs_the_two():
    from siamcli.models.embedding import build_head
    from siamcli.training.start_model import fit_start, init_head_to_pass_on, set_head

    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 12)) * np.linspace(0.1, 5, 12) + 3  # 9 CNN features, then 3 "pixels"
    head = build_head(embedding_dim=8, feature_dim=12, dropout=0.3)
    init_head_to_pass_on(head, features, pixel_weight=0.25, pixel_dims=3)
    out = head(features.astype(np.float32), training=False).numpy()
    epsilon = head.get_layer("feature_norm").epsilon
    standardised = (features[:, :9] - features[:, :9].mean(0)) / np.sqrt(features[:, :9].var(0) + epsilon)
    centred = features[:, 9:] - features[:, 9:].mean(0)
    blocks = []
    for block, dims, weight in ((standardised, 6, 0.75), (centred, 2, 0.25)):  # 1/4 of the columns for pixels
        projected = (block - block.mean(0)) @ _principal_directions(block, dims)  # each block to a mean squared norm of 1
        blocks.append(np.sqrt(weight) * projected / np.sqrt(np.mean(np.sum(projected**2, axis=1))))
    expected = np.concatenate(blocks, axis=1)
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-4)

    fit = fit_start(head, features, 3)
    kernel = head.get_layer("projection").kernel.numpy()  # the larger block's directions stay orthonormal
    np.testing.assert_allclose(kernel[:9, :6].T @ kernel[:9, :6], np.eye(6), atol=1e-5)
    set_head(head, fit, 0.0)  # the backbone's features alone: pixels change nothing
    moved = features.copy()
    moved[:, 9:] = rng.normal(size=(50, 3))
    np.testing.assert_allclose(head(features.astype(np.float32)).numpy(), head(moved.astype(np.float32)).numpy(), atol=1e-5)
    set_head(head, fit, 1.0)  # pixels alone
    out = head(features.astype(np.float32)).numpy()
    assert np.abs(out[:, :6]).max() < 1e-6 and np.allclose(np.linalg.norm(out[:, 6:], axis=1), 1, atol=1e-5)


def test_the_pixel_weight_is_the_best_scoring_and_a_tie_goes_to_less_pixel():
    from siamcli.training.start_model import best_pixel_weight

    assert best_pixel_weight({0.0: 0.7, 0.25: 0.72, 0.5: 0.71}) == 0.25
    assert best_pixel_weight({0.0: 0.7, 0.5: 0.7, 1.0: 0.6}) == 0.0
    assert best_pixel_weight({0.0: 0.5, 1.0: 0.9}) == 1.0


def _noise_and_real_identities(root, seed=0):
    """14 identities × 4 images at 32 px: the 10 that the split holds out are real (each its own
    pattern); each of the 4 trained on holds one image of each of four of them: what training
    learns confuses held-out identities (and the test's learning rate wrecks the head besides)."""
    from collections import Counter

    from conftest import identity_pattern

    from siamcli.data.split import split_identities

    names = [f"id_{i:02d}" for i in range(14)]
    split = split_identities(Counter({name: 4 for name in names}), 0.75, seed)
    assert len(split.val) == 10
    rng = np.random.default_rng(seed)
    real = {name: names.index(name) for name in split.val}
    for number, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(4):
            if name in split.val:
                pattern = identity_pattern(number, 32)
            else:  # training identity t: one image each of held-out identities t … t + 3, which thus appear in
                # several training identities: a held-out identity's images are negatives of each other
                t = split.train.index(name)
                pattern = identity_pattern(real[split.val[t + j]], 32)
            blend = 0.5 * pattern + 0.5 * identity_pattern(1000 + int(rng.integers(10**6)), 32)  # far from trivial
            noisy = np.clip(blend + rng.normal(0, 8, pattern.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"img_{j}.png")
    return root, split


@pytest.mark.train
def test_a_run_whose_training_cannot_help_keeps_its_start_model(tmp_path, monkeypatch):
    from siamcli.models.embed import embed
    from siamcli.models.embedding import load_embedding_model
    from siamcli.training import trainer
    from siamcli.training.session import Session

    data, split = _noise_and_real_identities(tmp_path / "data")
    seen = {}
    original = Session._start

    def start_and_record(session):  # the start model's embeddings of the validation images, before any step
        original(session)
        seen["images"] = session.val.images.copy()
        seen["start"] = embed(session.nets.model, session.val.images).vectors

    monkeypatch.setattr(Session, "_start", start_and_record)
    config = TrainConfig(data_dir=str(data), image_size=32, embedding_dim=8, weights="none", batch_size=8,
                         images_per_identity=2, steps_per_epoch=20, frozen_epochs=3, finetune_epochs=0,
                         val_fraction=0.75, lr=2.0, patience=0, views=2, dropout=0.0)  # a rate that wrecks the head
    result = trainer.train(config, out=str(tmp_path / "run"), force=True)

    assert result.best_epoch == START_EPOCH and len(result.history) == 3
    assert (result.history["map_at_r"] < result.start_metrics["map_at_r"]).all()
    assert "no trained epoch beat the start model" in result.selection and result.selection in result.warnings
    recorded = json.loads((result.run_dir / "config.json").read_text())
    assert recorded["selection"]["kept_epoch"] == 0 and recorded["selection"]["line"] == result.selection
    scores = recorded["selection"]["pixel_weight_scores"]  # the start's pixel weight: the best on validation
    assert recorded["selection"]["pixel_weight_chosen_by"] == "validation" and set(scores) == {"0", "0.25", "0.5", "0.75", "1"}
    assert scores[f"{recorded['selection']['pixel_weight']:g}"] == max(scores.values()) == result.start_metrics["map_at_r"]
    kept = embed(load_embedding_model(result.run_dir / "model.keras"), seen["images"]).vectors
    np.testing.assert_allclose(kept, seen["start"], atol=1e-5)
    assert result.validation == {"held_out_identities": 10, "images": 40, "identities": 10, "images_of_train_identities": 0}


@pytest.mark.train
def test_with_few_held_out_identities_folds_choose_the_pixel_weight_and_the_frozen_length(tmp_path, image_folders):
    """Two identities held out: too few to measure, so the identity folds choose both."""
    from siamcli.training import trainer

    data = image_folders(identities=8, per_identity=4, size=32)
    config = TrainConfig(data_dir=str(data), image_size=32, embedding_dim=8, weights="none", batch_size=8,
                         images_per_identity=2, steps_per_epoch=3, frozen_epochs=2, finetune_epochs=0,
                         val_fraction=0.25, views=2)
    result = trainer.train(config, out=str(tmp_path / "run"), force=True)

    selection = json.loads((result.run_dir / "config.json").read_text())["selection"]
    assert selection["pixel_weight_chosen_by"] == "identity folds"
    scores = selection["pixel_weight_scores"]
    assert set(scores) == {"0", "0.25", "0.5", "0.75", "1"} and scores[f"{selection['pixel_weight']:g}"] == max(scores.values())
    curve = selection["frozen_length_by_folds"]
    assert curve[0] == pytest.approx(max(scores.values()))  # the folds' epoch 0 is the chosen start
    assert 2 <= len(curve) <= 3 and result.validation["held_out_identities"] == 2
    summary = result.summary()
    assert (summary["pixel_weight"], summary["pixel_weight_chosen_by"]) == (selection["pixel_weight"], "identity folds")
