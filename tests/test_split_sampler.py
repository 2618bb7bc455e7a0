"""Identity split and P×K sampling."""

from collections import Counter

import numpy as np
import pytest

from siamcli.data.pipeline import PKSampler
from siamcli.data.split import split_identities
from siamcli.errors import UserError


def test_split_is_disjoint_reproducible_and_sized():
    counts = Counter({f"s{i}": 10 for i in range(20)})
    first = split_identities(counts, 0.2, seed=3)
    assert len(first.val) == 4 and len(first.train) == 16
    assert not set(first.val) & set(first.train)
    assert split_identities(counts, 0.2, seed=3) == first
    assert split_identities(counts, 0.2, seed=4) != first


def test_single_image_identities_are_never_held_out():
    counts = Counter({"a": 5, "b": 5, "c": 5, "solo": 1})
    for seed in range(20):
        assert "solo" not in split_identities(counts, 0.5, seed).val


def test_too_few_identities_is_a_user_error():
    with pytest.raises(UserError, match="at least 2 identities"):
        split_identities(Counter({"a": 5, "b": 1}), 0.2, 0)


def test_pk_batches_hold_p_identities_with_k_images_each():
    labels = np.repeat(np.arange(10), [5, 5, 5, 5, 5, 5, 5, 5, 3, 1])
    sampler = PKSampler(labels, identities_per_batch=4, images_per_identity=4, seed=0)
    for _ in range(200):
        batch = sampler.next_batch()
        assert batch.shape == (16,)
        groups = labels[batch].reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # each group of K is one identity
        assert len(set(groups[:, 0])) == 4  # P distinct identities
        for group, ids in zip(groups[:, 0], batch.reshape(4, 4)):
            if (labels == group).sum() >= 4:
                assert len(set(ids)) == 4  # no repeats when the identity has enough images
