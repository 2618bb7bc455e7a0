"""The in-batch triplet loss against a plain numpy reference, triplet by triplet."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from siamcli.models.triplet_loss import triplet_loss


def _batch(seed=0, n_ids=4, k=3, dim=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_ids * k, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_ids), k).astype(np.int32)
    image_ids = np.arange(n_ids * k, dtype=np.int32)
    return x, labels, image_ids


def _valid_triplets(labels, image_ids):
    n = len(labels)
    for a, p, q in itertools.product(range(n), repeat=3):
        if labels[a] == labels[p] and image_ids[a] != image_ids[p] and labels[q] != labels[a]:
            yield a, p, q


def _reference(x, labels, image_ids, margin, mining):
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(labels)
    if mining == "all":
        losses = [max(d[a, p] - d[a, q] + margin, 0) for a, p, q in _valid_triplets(labels, image_ids)]
        active = [v for v in losses if v > 1e-6]
        return sum(active) / max(len(active), 1)
    if mining == "hard":
        terms = []
        for a in range(n):
            pos = [d[a, p] for p in range(n) if labels[p] == labels[a] and image_ids[p] != image_ids[a]]
            neg = [d[a, q] for q in range(n) if labels[q] != labels[a]]
            if pos and neg:
                terms.append(max(max(pos) - min(neg) + margin, 0))
        return sum(terms) / len(terms)
    if mining == "semi-hard":
        terms = []
        for a in range(n):
            for p in range(n):
                if labels[p] != labels[a] or image_ids[p] == image_ids[a]:
                    continue
                neg = [d[a, q] for q in range(n) if labels[q] != labels[a]]
                beyond = [v for v in neg if v > d[a, p]]
                chosen = min(beyond) if beyond else max(neg)
                terms.append(max(d[a, p] - chosen + margin, 0))
        return sum(terms) / len(terms)
    raise AssertionError(mining)


@pytest.mark.parametrize("mining", ["all", "hard", "semi-hard"])
def test_loss_matches_the_numpy_reference(mining):
    x, labels, ids = _batch(seed=1)
    loss, stats = triplet_loss(tf.constant(x), tf.constant(labels), tf.constant(ids), 0.5, mining)
    assert float(loss) == pytest.approx(_reference(x, labels, ids, 0.5, mining), rel=1e-5, abs=1e-6)
    n_valid = sum(1 for _ in _valid_triplets(labels, ids))
    assert float(stats.valid_triplets) == n_valid


def _random_picks(seed: int) -> np.ndarray:
    """(negative, anchor) → how many of the anchor's pairs drew that negative, read off the gradient.

    Identity 0 has three images at the unit axes e0, e1, e2: six anchor–positive pairs, two per
    anchor. Four single images of other identities, at e3 … e6, are the only valid negatives. Every
    squared distance is 2, so with a margin of 5 every term (2 − 2 + 5) is active and the loss is
    their mean over 6 pairs: the gradient on negative q is Σ over the pairs that drew q of
    −2 (x_q − x_anchor) / 6, whose component along anchor a's axis is 1/3 per pair of a that drew q.
    A drawn "negative" of identity 0 would leave that anchor's column short.
    """
    x = tf.Variable(np.eye(7, dtype=np.float32))
    labels, ids = tf.constant([0, 0, 0, 1, 2, 3, 4]), tf.range(7)
    with tf.GradientTape() as tape:
        loss, stats = triplet_loss(x, labels, ids, 5.0, "random", random_seed=tf.constant([seed, 7]))
    assert float(loss) == pytest.approx(5.0) and float(stats.loss_count) == 6  # one term per pair
    return np.rint(tape.gradient(loss, x).numpy()[3:, :3] * 3).astype(int)


def test_random_mining_draws_one_negative_per_pair_among_the_other_identities_uniformly():
    picks = [_random_picks(seed) for seed in range(20)]
    for drawn in picks:
        assert (drawn >= 0).all() and list(drawn.sum(axis=0)) == [2, 2, 2]  # each pair drew one valid negative
    total = np.sum(picks, axis=0)  # 20 seeds × 2 pairs per anchor: 40 draws over 4 negatives
    assert (total >= 4).all(), total  # every negative is drawn for every anchor (each 10 times on average)
    assert len({drawn.tobytes() for drawn in picks}) > 10  # the draw depends on the seed
    assert np.array_equal(_random_picks(3), picks[3])  # ... and on nothing else


def test_copies_of_one_image_are_never_positives():
    x, labels, ids = _batch(seed=3, n_ids=3, k=2)
    ids_with_copy = ids.copy()
    ids_with_copy[1] = ids_with_copy[0]  # rows 0 and 1 are the same image
    _, stats = triplet_loss(tf.constant(x), tf.constant(labels), tf.constant(ids_with_copy), 0.2, "all")
    assert float(stats.positive_pairs) == 4  # identity 0 lost both of its (ordered) pairs


def test_loss_is_float32_and_finite_for_bfloat16_embeddings():
    x, labels, ids = _batch(seed=4)
    loss, _ = triplet_loss(tf.constant(x, tf.bfloat16), tf.constant(labels), tf.constant(ids), 0.2, "hard")
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))


def test_collapse_is_detected_from_the_embeddings_or_the_loss():
    from siamcli.training.history import is_collapsed

    rng = np.random.default_rng(0)
    spread = rng.normal(size=(20, 8))
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    point = np.tile(spread[:1], (20, 1)) + rng.normal(scale=1e-4, size=(20, 8))
    assert not is_collapsed(spread, active_fraction=0.3, loss=0.1, margin=0.2)
    assert is_collapsed(point, active_fraction=0.3, loss=0.1, margin=0.2)
    # Equal distances everywhere: every triplet active and the loss pinned at the margin.
    assert is_collapsed(None, active_fraction=1.0, loss=0.2, margin=0.2)
    assert not is_collapsed(None, active_fraction=1.0, loss=0.35, margin=0.2)

    # The loss itself reads so on a collapsed batch: all embeddings equal → loss = margin.
    x, labels, ids = _batch(seed=5)
    same = np.tile(x[:1], (len(x), 1))
    loss, stats = triplet_loss(tf.constant(same), tf.constant(labels), tf.constant(ids), 0.2, "all")
    active = float(stats.active_triplets) / float(stats.valid_triplets)
    assert is_collapsed(None, active, float(loss), 0.2)
