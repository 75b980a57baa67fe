"""Seriation puts alike artists together: hidden blocks come back contiguous."""

from __future__ import annotations

import numpy as np

from dashboard.similarity import seriate


def test_seriation_recovers_shuffled_blocks():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], [5, 7, 4])
    centres = rng.normal(size=(3, 32))
    vectors = centres[groups] + 0.3 * rng.normal(size=(len(groups), 32))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shuffle = rng.permutation(len(groups))
    similarity = vectors[shuffle] @ vectors[shuffle].T
    order = seriate(similarity)
    assert sorted(order) == list(range(len(groups)))
    labels = groups[shuffle][order]
    changes = int((np.diff(labels) != 0).sum())
    assert changes == 2, labels  # three blocks, each in one piece


def test_seriation_of_random_order_is_not_the_identity_and_small_inputs_pass_through():
    assert list(seriate(np.eye(2))) == [0, 1]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = seriate(vectors @ vectors.T)
    assert sorted(order) == list(range(12))
