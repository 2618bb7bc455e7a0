"""`--score`: clusters against the identity sub-folders the images sit in.

    pairwise precision / recall / F1  over pairs of images: put together by the clustering and of
                                      one identity (scikit-learn's pair_confusion_matrix)
    BCubed precision / recall / F1    per image: the share of its cluster that is its identity, and
                                      of its identity that is in its cluster, averaged over images
                                      (Bagga & Baldwin 1998; from scikit-learn's contingency matrix)
    ARI, NMI                          adjusted Rand index, normalised mutual information (scikit-learn)
    clusters / identities             how many of each

With no pair put together, pairwise precision is 1 (no wrong pair was claimed); with no two
images of one identity, pairwise recall is 1 (none was missed).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from siamcli.errors import UserError


def score_clusters(identities: Sequence[str], labels: np.ndarray) -> dict:
    """The scores of `labels` (one per image) against `identities` (one name per image)."""
    from sklearn import metrics

    if len(identities) != len(labels):
        raise ValueError(f"{len(identities)} identities for {len(labels)} labels")
    if not len(labels):
        raise UserError("no image to score")
    (_, false_pairs), (missed, together) = metrics.cluster.pair_confusion_matrix(identities, labels).tolist()
    precision = _share(together, together + false_pairs)
    recall = _share(together, together + missed)
    contingency = metrics.cluster.contingency_matrix(identities, labels, sparse=True).tocoo()
    overlap = contingency.data.astype(np.float64)
    identity_sizes = np.bincount(contingency.row, weights=overlap)
    cluster_sizes = np.bincount(contingency.col, weights=overlap)
    bcubed_precision = float((overlap ** 2 / cluster_sizes[contingency.col]).sum() / len(labels))
    bcubed_recall = float((overlap ** 2 / identity_sizes[contingency.row]).sum() / len(labels))
    return {
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": _f1(precision, recall),
        "bcubed_precision": bcubed_precision,
        "bcubed_recall": bcubed_recall,
        "bcubed_f1": _f1(bcubed_precision, bcubed_recall),
        "adjusted_rand_index": float(metrics.adjusted_rand_score(identities, labels)),
        "normalized_mutual_info": float(metrics.normalized_mutual_info_score(identities, labels)),
        "clusters": int(len(cluster_sizes)),
        "identities": int(len(identity_sizes)),
    }


def _share(part: int, whole: int) -> float:
    return 1.0 if whole == 0 else part / whole


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
