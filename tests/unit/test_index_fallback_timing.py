"""The exact-search timing behind the batch fallback covers a bounded share of the vectors
and scales it to the index, so a 10M-vector build does not spend minutes timing it."""

from __future__ import annotations

import faiss
import numpy as np

from evaluator.embedding.index_exact import BLOCK, batch_fallback, exact_seconds


def flat_index(n, d=256, seed=0):  # batch_fallback tiles queries to 128,000 / d: few at d 256
    vecs = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    index.add_with_ids(vecs, np.arange(n, dtype=np.int64))
    return index


def test_only_whole_blocks_up_to_the_bound_are_timed():
    index = flat_index(3 * BLOCK + 10)
    queries = np.random.default_rng(1).normal(size=(50, 256)).astype(np.float32)
    seconds, timed = exact_seconds(index, queries, 10, timed_vectors=1)
    assert timed == BLOCK and seconds > 0
    _, everything = exact_seconds(index, queries, 10, timed_vectors=10**9)
    assert everything == index.ntotal


def test_the_fallback_reports_how_many_vectors_it_timed():
    index = flat_index(2 * BLOCK)
    queries = np.random.default_rng(2).normal(size=(100, 256)).astype(np.float32)
    size, timing = batch_fallback(index, queries, timed_vectors=BLOCK)
    assert timing["exact_vectors_timed"] == BLOCK and timing["batch"] >= 100
    assert size is None or size == timing["batch"]
