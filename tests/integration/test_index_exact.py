"""Exact search over the vectors each index kind stores, and the large-batch fallback."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.embedding.index import IndexConfig, build_kind, search_by_vector, set_search_param
from evaluator.embedding.index_exact import blas_batch_size, exact_search, topk_over_blocks
from tests.support.vectors import clustered, unit


def naive_topk(queries, vecs, ids, k):
    sims = queries @ vecs.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def test_blas_batch_size_follows_faiss_threshold():
    assert blas_batch_size(512) == 250  # 128,000 floats
    assert blas_batch_size(768) == 167
    assert blas_batch_size(1_000_000) == 1


def test_topk_over_blocks_pads_when_there_are_fewer_vectors_than_k():
    q = unit(np.random.default_rng(0).normal(size=(3, 8)))
    v = unit(np.random.default_rng(1).normal(size=(4, 8)))
    sims, ids = topk_over_blocks(q, iter([(v[:2], np.array([10, 11])), (v[2:], np.array([12, 13]))]), 6)
    ref_s, ref_i = naive_topk(q, v, np.array([10, 11, 12, 13]), 4)
    np.testing.assert_array_equal(ids[:, :4], ref_i)
    np.testing.assert_allclose(sims[:, :4], ref_s, atol=1e-6)
    assert (ids[:, 4:] == -1).all() and np.isneginf(sims[:, 4:]).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfsq", "ivfpq", "hnsw"])
def test_exact_search_of_every_kind_equals_brute_force(kind):
    vecs = clustered(4000)
    ids = np.random.default_rng(3).choice(2**62, size=len(vecs), replace=False).astype(np.int64)
    index = build_kind(kind, vecs, ids, IndexConfig())
    queries = clustered(40, seed=9)
    sims, found = exact_search(index, queries, 10)
    ref_s, ref_i = naive_topk(queries, vecs, ids, 10)
    np.testing.assert_array_equal(found, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)


def test_a_large_batch_goes_exact_when_the_meta_says_so_and_a_small_one_does_not():
    vecs = clustered(6000)
    ids = np.arange(len(vecs), dtype=np.int64) * 3 + 1
    index = build_kind("ivf", vecs, ids, IndexConfig())
    set_search_param(index, "ivf", 1)  # one list a query: visibly approximate
    queries = clustered(300, seed=11)
    _, ref_i = naive_topk(queries, vecs, ids, 10)
    meta = {"kind": "ivf", "exact_batch_from": 250}
    _, batch = search_by_vector(index, queries, 10, meta)
    np.testing.assert_array_equal(batch, ref_i)
    _, small = search_by_vector(index, queries[:100], 10, meta)  # under the batch size: the IVF answers
    _, approx = index.search(queries[:100], 10)
    np.testing.assert_array_equal(small, approx)
    assert (small != ref_i[:100]).any()
    _, plain = search_by_vector(index, queries, 10, {"kind": "ivf", "exact_batch_from": None})
    assert (plain != ref_i).any()
