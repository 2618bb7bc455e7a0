"""Triplet loss with in-batch mining, correct under any tf.distribute strategy.

Every image in a P×K batch is embedded once; triplets (anchor, positive, negative) are then
chosen among the batch's embeddings. Under a multi-replica strategy each replica gathers the
whole global batch's embeddings (`all_gather`), mines triplets for its own anchors against all
of them, and divides its loss by the global count, so the summed gradient equals what one
device computes on the whole batch.

Distances are squared Euclidean between unit vectors (0 … 4); the loss is always float32.
Positives never pair an image with itself or with a copy of itself (same `image_ids`).
"""

from __future__ import annotations

from typing import NamedTuple

from siamcli.choices import Mining
from siamcli.tf_runtime import import_tensorflow

tf = import_tensorflow()



class TripletStats(NamedTuple):
    """Sums over the global batch; the trainer turns them into per-epoch means.

    A NamedTuple, so tf.function and tf.distribute can pass it around as a nest of tensors.
    """

    loss_sum: object  # scalar: Σ triplet losses counted in the loss
    loss_count: object  # scalar: how many terms the loss averages over
    valid_triplets: object  # scalar: (a, p, n) with a~p same identity, n different
    active_triplets: object  # scalar: of those, how many violate the margin
    positive_distance_sum: object
    positive_pairs: object
    negative_distance_sum: object
    negative_pairs: object


def pairwise_squared_distances(a, b):
    """(n, d), (m, d) → (n, m) squared Euclidean distances, clipped at 0 against round-off."""
    dots = tf.matmul(a, b, transpose_b=True)
    a2 = tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
    b2 = tf.reduce_sum(tf.square(b), axis=1, keepdims=True)
    return tf.maximum(a2 - 2.0 * dots + tf.transpose(b2), 0.0)


def _gather_global(value, context):
    """This replica's rows → the global batch's rows, on every replica, with gradients.

    Built from all_reduce (each replica contributes its rows at its offset, zeros elsewhere)
    rather than `all_gather`, which MultiWorkerMirroredStrategy cannot run in a replica
    context; the gradient of a sum all-reduce is the all-reduced gradient, which is exactly
    all_gather's gradient. Integer tensors travel as float32 (exact below 2**24).
    """
    if context is None or context.num_replicas_in_sync == 1:
        return value, 0
    rows = tf.shape(value)[0]
    offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * rows
    after = (context.num_replicas_in_sync - 1) * rows - offset
    padding = tf.concat([[[offset, after]], tf.zeros([tf.rank(value) - 1, 2], tf.int32)], axis=0)
    dtype = value.dtype
    spread = tf.pad(tf.cast(value, tf.float32), padding)
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, spread)
    return tf.cast(gathered, dtype), offset


def _sum_global(value, context):
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def triplet_loss(embeddings, labels, image_ids, margin: float, mining: str, random_seed=None):
    """Return (loss to minimise on this replica, TripletStats over the global batch).

    embeddings: (b, d) this replica's embeddings; labels, image_ids: (b,) int.
    random_seed: int32 (2,) seed for `mining="random"` (the same on every replica).
    """
    if mining not in Mining.values():
        raise ValueError(f"unknown mining mode {mining!r}; choose one of {', '.join(Mining.values())}")
    context = tf.distribute.get_replica_context()
    embeddings = tf.cast(embeddings, tf.float32)
    all_embeddings, offset = _gather_global(embeddings, context)
    all_labels, _ = _gather_global(labels, context)
    all_ids, _ = _gather_global(image_ids, context)

    distances = pairwise_squared_distances(embeddings, all_embeddings)  # (b, B)
    same = tf.equal(labels[:, None], all_labels[None, :])
    positive = tf.logical_and(same, tf.not_equal(image_ids[:, None], all_ids[None, :]))
    negative = tf.logical_not(same)
    positive_f = tf.cast(positive, tf.float32)
    negative_f = tf.cast(negative, tf.float32)

    # Every (anchor, positive, negative) combination: (b, B, B).
    margins = distances[:, :, None] - distances[:, None, :] + margin
    valid = tf.logical_and(positive[:, :, None], negative[:, None, :])
    valid_f = tf.cast(valid, tf.float32)
    active_f = tf.cast(margins > 1e-6, tf.float32) * valid_f

    if mining == "all":
        # Batch-all: mean over the triplets that still violate the margin.
        loss_sum = tf.reduce_sum(tf.nn.relu(margins) * valid_f)
        loss_count = tf.reduce_sum(active_f)
    elif mining == "hard":
        # Batch-hard: per anchor, its farthest positive against its closest negative.
        hardest_positive = tf.reduce_max(distances * positive_f, axis=1)
        hardest_negative = tf.reduce_min(distances + 1e9 * (1.0 - negative_f), axis=1)
        has_triplet = tf.cast(
            tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1)), tf.float32
        )
        loss_sum = tf.reduce_sum(tf.nn.relu(hardest_positive - hardest_negative + margin) * has_triplet)
        loss_count = tf.reduce_sum(has_triplet)
    else:
        pair_has_negative = tf.cast(tf.reduce_any(negative, axis=1), tf.float32)[:, None]
        pair_f = positive_f * pair_has_negative  # (b, B) anchor–positive pairs with some negative
        negative_distances = tf.broadcast_to(distances[:, None, :], tf.shape(margins))  # (b, B, B)
        if mining == "semi-hard":
            # FaceNet: the closest negative farther than the positive; failing that, the farthest.
            beyond = tf.logical_and(valid, negative_distances > distances[:, :, None])
            closest_beyond = tf.reduce_min(tf.where(beyond, negative_distances, 1e9), axis=2)
            farthest = tf.reduce_max(tf.where(valid, negative_distances, -1e9), axis=2)
            chosen = tf.where(tf.reduce_any(beyond, axis=2), closest_beyond, farthest)
        else:  # random: one uniformly drawn negative per anchor–positive pair
            rows = tf.shape(all_embeddings)[0]
            scores = tf.random.stateless_uniform(tf.stack([rows, rows, rows]), seed=random_seed)
            scores = scores[offset : offset + tf.shape(embeddings)[0]]
            pick = tf.argmax(tf.where(valid, scores, -1.0), axis=2)
            chosen = tf.gather(distances, pick, batch_dims=1)
        loss_sum = tf.reduce_sum(tf.nn.relu(distances - chosen + margin) * pair_f)
        loss_count = tf.reduce_sum(pair_f)

    stats = TripletStats(
        loss_sum=_sum_global(loss_sum, context),
        loss_count=_sum_global(loss_count, context),
        valid_triplets=_sum_global(tf.reduce_sum(valid_f), context),
        active_triplets=_sum_global(tf.reduce_sum(active_f), context),
        positive_distance_sum=_sum_global(tf.reduce_sum(distances * positive_f), context),
        positive_pairs=_sum_global(tf.reduce_sum(positive_f), context),
        negative_distance_sum=_sum_global(tf.reduce_sum(distances * negative_f), context),
        negative_pairs=_sum_global(tf.reduce_sum(negative_f), context),
    )
    loss = loss_sum / tf.maximum(stats.loss_count, 1.0)
    return loss, stats
