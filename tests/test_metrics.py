"""Evaluation metrics: hand-computed cases, an independent brute force, blocking, sklearn agreement.

Pure numpy/FAISS/scikit-learn: no TensorFlow, fast.
"""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from siamcli.evaluation.classification import classify
from siamcli.evaluation.metrics import ExactNeighbours, evaluate_retrieval, retrieval_metrics
from siamcli.evaluation.verification import (
    _different_identity_pairs,
    _same_identity_pairs,
    equal_error_rate,
    pair_distances,
    roc_auc,
    roc_curve,
    verification_metrics,
)


def brute_force_retrieval(vectors, labels, ks):
    """Independent leave-one-out reference: full distance matrix, rank by (float32 distance, index)."""
    vectors = np.asarray(vectors, np.float64)
    labels = np.asarray(labels)
    n = len(vectors)
    distances = ((vectors[:, None, :] - vectors[None, :, :]) ** 2).sum(-1).astype(np.float32)
    p1, recalls, rps, aps, nearest = [], {k: [] for k in ks}, [], [], {}
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        ranked = others[np.lexsort((others, distances[i, others]))]
        relevant = labels[ranked] == labels[i]
        r = int(relevant.sum())
        if r == 0:
            continue
        nearest[i] = ranked[0]
        p1.append(relevant[0])
        for k in ks:
            recalls[k].append(relevant[:k].any())
        top = relevant[:r]
        rps.append(top.mean())
        aps.append(sum(top[:i + 1].sum() / (i + 1) for i in range(r) if top[i]) / r)
    return {
        "precision_at_1": float(np.mean(p1)),
        "recall_at_k": {k: float(np.mean(v)) for k, v in recalls.items()},
        "r_precision": float(np.mean(rps)),
        "map_at_r": float(np.mean(aps)),
        "queries": len(p1),
        "nearest": nearest,
    }


# ---- retrieval: hand-computed ----------------------------------------------------------------

def test_hand_computed_case_with_ties_and_a_single_image_identity():
    # 1-D points; ties: query 1 is 1 from both 0 and 2, query 2 is 2 from both 0 and 3, query 3 is
    # 3 from both 1 and 4 — the earlier index ranks first. Identity c has one image: not a query.
    x = np.array([[0.0], [1.0], [2.0], [4.0], [7.0], [20.0]])
    labels = ["a", "b", "a", "a", "b", "c"]
    result = evaluate_retrieval(x, labels, ks=(1, 3, 5))
    m = result.metrics
    assert m.queries == 5
    assert m.precision_at_1 == pytest.approx(0.2)
    assert m.recall_at_k == pytest.approx({1: 0.2, 3: 0.8, 5: 1.0})
    assert m.r_precision == pytest.approx(0.3)
    assert m.map_at_r == pytest.approx(0.2)
    assert result.nearest.tolist() == [1, 0, 1, 2, 3, -1]
    assert result.average_precision[:5] == pytest.approx([0.25, 0.0, 0.25, 0.5, 0.0])
    assert result.is_query.tolist() == [True] * 5 + [False]
    assert math.isnan(result.average_precision[5])
    reference = brute_force_retrieval(x, labels, (1, 3, 5))
    assert m.map_at_r == pytest.approx(reference["map_at_r"])


def test_ties_are_broken_by_position():
    # Query 0 is as far from a different identity as from its own; the earlier image wins.
    assert retrieval_metrics([[0.0], [1.0], [-1.0]], ["a", "b", "a"], ks=(1,)).precision_at_1 == 0.5
    assert retrieval_metrics([[0.0], [-1.0], [1.0]], ["a", "a", "b"], ks=(1,)).precision_at_1 == 1.0


def test_exact_duplicates_count_as_neighbours_but_the_query_itself_never_does():
    x = np.array([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [9.0, 0.0]])
    labels = ["a", "a", "b", "b"]
    result = evaluate_retrieval(x, labels, ks=(1, 3))
    assert result.nearest.tolist() == [1, 0, 0, 0]
    assert result.metrics.precision_at_1 == 0.5
    assert result.metrics.recall_at_k == {1: 0.5, 3: 1.0}
    assert result.nearest_distance.tolist() == [0.0, 0.0, 0.0, 16.0]


def test_perfect_clusters_score_one_and_k_past_the_gallery_counts_it_all():
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1]])
    m = retrieval_metrics(x, [0, 0, 0, 1, 1], ks=(1, 2, 100))
    assert (m.precision_at_1, m.r_precision, m.map_at_r) == (1.0, 1.0, 1.0)
    assert m.recall_at_k == {1: 1.0, 2: 1.0, 100: 1.0}


def test_no_queries_gives_nan_and_bad_input_raises():
    m = retrieval_metrics([[0.0], [1.0]], ["a", "b"], ks=(1,))
    assert m.queries == 0 and math.isnan(m.map_at_r)
    assert m.to_json()["map_at_r"] is None
    with pytest.raises(ValueError):
        retrieval_metrics([[0.0], [1.0]], ["a", "a"], ks=(0,))
    with pytest.raises(ValueError):
        retrieval_metrics([[0.0], [np.nan]], ["a", "a"])
    with pytest.raises(ValueError):
        retrieval_metrics([[0.0], [1.0]], ["a"])


def test_json_shape_of_recall_at_k():
    m = retrieval_metrics([[0.0], [0.1], [5.0], [5.1]], ["a", "a", "b", "b"], ks=(10, 1, 5))
    assert list(m.to_json()) == ["precision_at_1", "recall_at_k", "r_precision", "map_at_r"]
    assert m.to_json()["recall_at_k"] == {"1": 1.0, "5": 1.0, "10": 1.0}


# ---- retrieval: against the brute force, blocked = unblocked ---------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_matches_an_independent_brute_force_on_tie_heavy_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 70))
    x = rng.integers(0, 3, size=(n, int(rng.integers(1, 4)))).astype(np.float32)  # many exact ties
    labels = rng.integers(0, int(rng.integers(2, 8)), size=n)
    ks = (1, 3, 10)
    reference = brute_force_retrieval(x, labels, ks)
    result = evaluate_retrieval(x, labels, ks)
    m = result.metrics
    assert m.queries == reference["queries"]
    assert m.precision_at_1 == pytest.approx(reference["precision_at_1"])
    assert m.recall_at_k == pytest.approx(reference["recall_at_k"])
    assert m.r_precision == pytest.approx(reference["r_precision"])
    assert m.map_at_r == pytest.approx(reference["map_at_r"])
    assert {i: int(result.nearest[i]) for i in reference["nearest"]} == reference["nearest"]


def test_blocked_equals_unblocked():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    x[50:60] = x[40]  # a run of exact duplicates across identities
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.concatenate([np.repeat(np.arange(20), 12), rng.integers(20, 40, size=60)])  # R from 0 to 11+
    whole = evaluate_retrieval(x, labels, (1, 5, 10), block_size=100_000, memory_bytes=1 << 30)
    tiny = evaluate_retrieval(x, labels, (1, 5, 10), block_size=3, memory_bytes=1)
    assert whole.metrics == tiny.metrics
    for name in ("nearest", "nearest_distance", "average_precision", "r_precision"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(tiny, name))


def test_re_search_after_an_uncertain_boundary_gives_the_same_neighbours():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(120, 3)).astype(np.float32)
    rows = np.arange(120)
    normal = ExactNeighbours(x)
    distances, indices = normal.search(rows, 7)
    cautious = ExactNeighbours(x)
    cautious.slack = 1e9  # every boundary looks uncertain: the list grows until it holds everything
    again = cautious.search(rows, 7)
    np.testing.assert_array_equal(indices, again[1])
    np.testing.assert_array_equal(distances, again[0])
    assert not np.any(indices == rows[:, None])


def test_blocks_stay_within_the_memory_budget():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    searcher = ExactNeighbours(x, memory_bytes=64 * 1024)
    depth = np.full(500, 40)
    seen = []
    for block, distances, indices in searcher.blocks(np.arange(500), depth, block_size=10_000):
        assert distances.shape == indices.shape == (len(block), 40)
        assert len(block) * 60 * 48 <= 64 * 1024  # rows × padded width × bytes per entry
        seen.extend(block.tolist())
    assert sorted(seen) == list(range(500))


# ---- classification ----------------------------------------------------------------------------

def test_per_class_metrics_and_confusion_equal_scikit_learn():
    rng = np.random.default_rng(1)
    truth = rng.choice(["ann", "bob", "cy", "dee", "eve"], size=80)
    predicted = np.where(rng.random(80) < 0.6, truth, rng.choice(["ann", "bob", "cy", "zed"], size=80))  # zed: never true
    result = classify(truth, predicted)
    labels = sorted(set(truth) | set(predicted))
    assert result.labels == labels
    report = skm.classification_report(truth, predicted, labels=labels, output_dict=True, zero_division=0)
    for row in result.per_class.itertuples(index=False):
        expected = report[row.label]
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"], expected["support"])
        )
    np.testing.assert_array_equal(result.confusion_matrix(), skm.confusion_matrix(truth, predicted, labels=labels))
    assert result.accuracy == pytest.approx(skm.accuracy_score(truth, predicted))
    assert result.macro_f1 == pytest.approx(skm.f1_score(truth, predicted, average="macro", zero_division=0))
    assert list(result.per_class.columns) == ["label", "precision", "recall", "f1", "support"]
    frame = result.confusion_frame()
    assert list(frame.columns) == ["label"] + labels and frame["label"].tolist() == labels


def test_classification_from_nearest_neighbours_and_worst_first():
    x = np.array([[0.0], [0.2], [0.3], [5.0], [5.1], [0.25]])
    labels = np.array(["a", "a", "b", "b", "b", "c"])
    result = evaluate_retrieval(x, labels, (1,))
    queries = np.flatnonzero(result.is_query)
    classified = classify(labels[queries], labels[result.nearest[queries]])
    assert classified.accuracy == pytest.approx(result.metrics.precision_at_1)
    worst = classified.worst_first()
    assert worst["f1"].is_monotonic_increasing
    assert "c" in classified.labels and int(classified.per_class.set_index("label").loc["c", "support"]) == 0


# ---- verification ------------------------------------------------------------------------------

def test_roc_auc_and_curve_equal_scikit_learn_with_ties():
    rng = np.random.default_rng(2)
    same = rng.integers(0, 6, size=40).astype(float)
    different = rng.integers(2, 9, size=70).astype(float)
    curve = roc_curve(same, different)
    y = np.r_[np.ones(len(same)), np.zeros(len(different))]
    score = -np.r_[same, different]  # nearer = more alike
    assert roc_auc(curve) == pytest.approx(skm.roc_auc_score(y, score))
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)


def test_equal_error_rate_hand_computed():
    # Perfect separation: EER 0, threshold halfway between the two groups.
    assert equal_error_rate(roc_curve([1.0, 2.0], [4.0, 6.0])) == (0.0, 3.0)
    # Rates meet exactly on a step (FNR = FPR = 1/3 for thresholds in [2.5, 3)): its middle.
    eer, threshold = equal_error_rate(roc_curve([1.0, 2.0, 3.0], [2.5, 4.0, 5.0]))
    assert (eer, threshold) == pytest.approx((1 / 3, 2.75))
    # Crossing between t=2.5 (FNR ½, FPR ⅓) and t=3 (FNR ¼, FPR ⅓): interpolated at ⅔ of the way.
    eer, threshold = equal_error_rate(roc_curve([1.0, 2.0, 3.0, 4.0], [2.5, 5.0, 6.0]))
    assert (eer, threshold) == pytest.approx((1 / 3, 2.5 + 2 / 3 * 0.5))


def test_verification_over_all_pairs_and_a_seeded_sample():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(12), 6)
    x = rng.normal(size=(72, 8)) + 1.5 * rng.normal(size=(12, 8))[labels]
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    exact = verification_metrics(x, labels)
    assert not exact.sampled
    assert (exact.same_pairs, exact.different_pairs) == (12 * 15, 72 * 71 // 2 - 12 * 15)
    wide = x.astype(np.float64)
    d = ((wide[:, None] - wide[None]) ** 2).sum(-1)
    i, j = np.triu_indices(72, 1)
    same = labels[i] == labels[j]
    assert exact.roc_auc == pytest.approx(skm.roc_auc_score(same, -d[i, j]))
    sampled = verification_metrics(x, labels, max_pairs=2000, seed=0)
    assert sampled.sampled and sampled.same_pairs == 180 and sampled.different_pairs == 1000
    assert sampled.roc_auc == pytest.approx(exact.roc_auc, abs=0.03)
    assert verification_metrics(x, labels, max_pairs=2000, seed=0).roc_auc == sampled.roc_auc  # seeded


def test_sampled_pairs_have_the_right_identities():
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(5), [1, 2, 3, 10, 40])
    first, second = _same_identity_pairs(codes, 500, rng)  # 841 same pairs > 500: drawn
    assert len(first) == 500 and np.all(codes[first] == codes[second]) and np.all(first != second)
    first, second = _different_identity_pairs(codes, 5000, rng)
    assert np.all(codes[first] != codes[second])
    assert set(codes[first]) == {0, 1, 2, 3, 4}
    pairs = pair_distances(rng.normal(size=(56, 3)), codes, max_pairs=100)
    assert pairs.sampled and pairs.total_pairs == 56 * 55 // 2 and len(pairs.different) == 50


def test_verification_without_different_pairs_is_undefined():
    result = verification_metrics(np.eye(3, dtype=np.float32), ["a", "a", "a"])
    assert math.isnan(result.roc_auc) and math.isnan(result.threshold)
