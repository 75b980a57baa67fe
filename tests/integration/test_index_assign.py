"""A batch's IVF lists found by one matmul against the centroids (``index_assign``): the
exact nearest lists, the same neighbours as a naive scan of those lists, and used by
``search_by_vector`` only when the index's meta says it measured faster."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from evaluator.embedding.index import (
    IndexConfig,
    build_index,
    build_kind,
    search_by_vector,
    set_search_param,
)
from evaluator.embedding.index_assign import (
    MATMUL,
    assign_by_matmul,
    centroids,
    min_batch,
    search_assigned,
)
from tests.support.vectors import clustered as support_clustered


def clustered(n, d=32, centers=60, seed=0):
    return support_clustered(n, d, centers, seed, spread=0.8)


@pytest.fixture(scope="module")
def ivf_index():
    vecs = clustered(20_000, d=64)  # min_batch(64) = 2,000 queries
    ids = np.arange(len(vecs), dtype=np.int64) * 3 + 7  # external ids unlike positions
    index = build_kind("ivf", vecs, ids, IndexConfig())
    set_search_param(index, "ivf", 4)
    return index, vecs, ids


def naive_search(index, vecs, ids, queries, k):
    """Every query's k best by a plain dot product over the vectors of its 4 nearest lists."""
    ivf = faiss.extract_index_ivf(index)
    cents = centroids(ivf)
    list_of = np.empty(ivf.ntotal, dtype=np.int64)
    for lst in range(ivf.nlist):
        size = ivf.invlists.list_size(lst)
        if size:
            list_of[faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size)] = lst
    out_s, out_i = [], []
    for q in queries:
        near = np.argsort(-(cents @ q), kind="stable")[: ivf.nprobe]
        rows = np.flatnonzero(np.isin(list_of, near))
        sims = vecs[rows] @ q
        best = rows[np.argsort(-sims, kind="stable")[:k]]
        s = vecs[best] @ q
        out_s.append(np.pad(s, (0, k - len(s)), constant_values=-np.inf))
        out_i.append(np.pad(ids[best], (0, k - len(best)), constant_values=-1))
    return np.array(out_s), np.array(out_i)


def test_the_matmul_finds_each_query_s_nearest_lists_best_first(ivf_index):
    index, _, _ = ivf_index
    ivf = faiss.extract_index_ivf(index)
    queries = clustered(300, d=64, seed=3)
    sims, lists = assign_by_matmul(ivf, queries)
    full = queries @ centroids(ivf).T
    expected = np.argsort(-full, axis=1, kind="stable")[:, : ivf.nprobe]
    np.testing.assert_array_equal(lists, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(full, expected, axis=1), rtol=0, atol=1e-6)


def test_search_assigned_equals_a_naive_scan_of_the_nearest_lists(ivf_index):
    index, vecs, ids = ivf_index
    queries = clustered(200, d=64, seed=4)
    sims, found = search_assigned(index, queries, 10)
    ref_sims, ref_ids = naive_search(index, vecs, ids, queries, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=1e-5)


def test_a_k_past_the_probed_vectors_pads_with_minus_one_as_faiss_does(ivf_index):
    index, vecs, ids = ivf_index
    set_search_param(index, "ivf", 1)
    try:
        queries = clustered(20, d=64, seed=5)
        k = 2000  # more than any one list holds
        sims, found = search_assigned(index, queries, k)
        own_sims, own = index.search(queries, k)
        assert (found == -1).any()
        np.testing.assert_array_equal(found == -1, own == -1)
    finally:
        set_search_param(index, "ivf", 4)


def test_search_by_vector_takes_the_matmul_only_when_the_meta_says_so_and_the_batch_is_large(ivf_index):
    index, vecs, ids = ivf_index
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    queries = clustered(min_batch(64), d=64, seed=6)
    ref = naive_search(index, vecs, ids, queries, 10)[1]
    quantizer.hnsw.efSearch = 1  # a starved graph walk misses some of the nearest lists
    try:
        own = index.search(queries, 10)[1]
        assert (own != ref).any(), "the starved quantizer should miss lists for this test to tell the paths apart"
        np.testing.assert_array_equal(search_by_vector(index, queries, 10, {"kind": "ivf", "batch_assign": MATMUL})[1], ref)
        np.testing.assert_array_equal(search_by_vector(index, queries, 10, {"kind": "ivf", "batch_assign": None})[1], own)
        small = queries[: min_batch(64) - 1]
        np.testing.assert_array_equal(search_by_vector(index, small, 10, {"kind": "ivf", "batch_assign": MATMUL})[1],
                                      index.search(small, 10)[1])
    finally:
        set_search_param(index, "ivf", 4)  # efSearch back to its nprobe's width


def test_building_an_ivf_records_which_assignment_measured_faster():
    vecs = clustered(6000)
    ids = np.arange(len(vecs), dtype=np.int64)
    _, meta = build_index(vecs, ids, IndexConfig(ivf_threshold=1000, recall_queries=200))
    timing = meta["assign_timing"]
    assert meta["kind"] == "ivf" and timing["batch"] == max(min_batch(32), 200)
    faster = timing["matmul_ms_per_query"] < timing["quantizer_ms_per_query"]
    assert meta["batch_assign"] == (MATMUL if faster else None)


@pytest.mark.parametrize("kind", ["ivfsq", "ivfpq"])
def test_a_re_ranked_ivf_equals_faiss_s_own_re_ranking_of_the_same_lists(kind):
    vecs = clustered(12_000, seed=8)
    ids = np.arange(len(vecs), dtype=np.int64) * 5 + 1
    index = build_kind(kind, vecs, ids, IndexConfig())
    set_search_param(index, kind, 3)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    quantizer.hnsw.efSearch = 512  # wide enough to find the exact nearest lists, as the matmul does
    queries = clustered(300, seed=9)
    sims, found = search_assigned(index, queries, 10)
    own_sims, own = index.search(queries, 10)
    np.testing.assert_array_equal(found, own)
    np.testing.assert_allclose(sims, own_sims, rtol=0, atol=1e-5)
    # the similarities are exact dot products with the stored vectors, not the codes' approximations
    pos = (found - 1) // 5
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", queries, vecs[pos]), rtol=0, atol=1e-5)
