"""FAISS: exact search = brute force, ids = image ids, incremental adds, IVF recall vs exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator.embedding.images import _write_part
from evaluator.embedding.index import (
    IndexConfig,
    build_centroid_index,
    load_index,
    measure_recall,
    search_by_image_id,
    search_by_vector,
    update_index,
)
from evaluator.workspace.workdir import Workdir
from tests.support.vectors import clustered as support_clustered
from tests.support.vectors import unit

MODEL = "synthetic/test"


def clustered(n, d=32, centers=50, seed=0, spread=0.3):
    return support_clustered(n, d, centers, seed, spread)


def add_vectors(wd, ids, vecs):
    _write_part(wd.embeddings(MODEL), list(map(int, ids)), vecs, MODEL)


def test_exact_index_matches_brute_force_and_maps_ids(tmp_path):
    wd = Workdir.at(tmp_path)
    rng = np.random.default_rng(1)
    vecs = clustered(500)
    ids = rng.choice(2**62, size=500, replace=False).astype(np.int64)  # image ids are big int64
    add_vectors(wd, ids, vecs)
    info = update_index(wd, MODEL)
    assert (info.kind, info.ntotal, info.added, info.recall_at_10) == ("flat", 500, 500, 1.0)
    index, meta = load_index(wd, MODEL)
    assert meta["kind"] == "flat"
    stored = vecs.astype(np.float16).astype(np.float32)  # what the part file holds
    q = stored[:7]
    sims, found = search_by_vector(index, q, k=5)
    order = np.argsort(-(q @ stored.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(found, ids[order])
    np.testing.assert_allclose(sims, np.take_along_axis(q @ stored.T, order, axis=1), atol=1e-5)
    s2, f2 = search_by_image_id(wd, MODEL, int(ids[3]), k=1)
    assert f2[0, 0] == ids[3] and s2[0, 0] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(KeyError, match="not in the index"):
        search_by_image_id(wd, MODEL, 12345, k=1)
    with pytest.raises(ValueError, match="dimension"):
        search_by_vector(index, np.zeros((1, 3), np.float32))


def test_new_vectors_are_added_without_a_rebuild(tmp_path):
    wd = Workdir.at(tmp_path)
    vecs = clustered(300, seed=2)
    add_vectors(wd, np.arange(200), vecs[:200])
    update_index(wd, MODEL)
    again = update_index(wd, MODEL)
    assert again.added == 0 and again.ntotal == 200
    add_vectors(wd, np.arange(200, 300), vecs[200:])
    info = update_index(wd, MODEL)
    assert (info.added, info.ntotal) == (100, 300)
    index, _ = load_index(wd, MODEL)
    _, found = index.search(vecs[250:251].astype(np.float16).astype(np.float32), 1)
    assert found[0, 0] == 250


def test_ivf_past_the_threshold_records_recall_against_exact(tmp_path):
    wd = Workdir.at(tmp_path)
    vecs = clustered(6000, seed=3)
    ids = np.arange(6000) * 3 + 7
    add_vectors(wd, ids[:1000], vecs[:1000])
    cfg = IndexConfig(ivf_threshold=4000, nprobe=16, recall_queries=300)
    assert update_index(wd, MODEL, cfg).kind == "flat"
    add_vectors(wd, ids[1000:], vecs[1000:])
    info = update_index(wd, MODEL, cfg)
    assert info.kind == "ivf" and info.ntotal == 6000 and info.nlist >= 50
    assert 0.95 <= info.recall_at_10 <= 1.0  # the target recall, reached by tuning nprobe
    meta = json.loads(wd.index(MODEL).with_suffix(".json").read_text())
    assert meta["kind"] == "ivf" and meta["recall_at_10"] == info.recall_at_10
    index, _ = load_index(wd, MODEL)
    # fewer lists probed, lower recall: the measurement is real
    from evaluator.embedding.index import _ivf_of

    _ivf_of(index).nprobe = 1
    stored = vecs.astype(np.float16).astype(np.float32)
    low = measure_recall(index, stored, ids, 10, 300)
    assert low < info.recall_at_10
    # reconstruct by id still works through the IVF direct map
    np.testing.assert_allclose(index.reconstruct(int(ids[4000])), stored[4000], atol=1e-6)
    # more images go into the trained IVF without retraining
    add_vectors(wd, [10**9], vecs[:1])
    more = update_index(wd, MODEL, cfg)
    assert more.kind == "ivf" and more.added == 1 and more.ntotal == 6001


def test_measure_recall_is_one_for_exact_search(tmp_path):
    import faiss

    vecs = clustered(400, seed=4)
    ids = np.arange(400, dtype=np.int64) + 10
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    index.add_with_ids(vecs, ids)
    assert measure_recall(index, vecs, ids, 10, 100) == pytest.approx(1.0)


def test_centroid_neighbors_match_a_naive_loop():
    rng = np.random.default_rng(5)
    vecs = unit(rng.normal(size=(60, 8)))
    artists = np.array([f"a{i % 6}" for i in range(60)], dtype=object)
    cidx = build_centroid_index("ck", artists, vecs)
    sims, pos = cidx.neighbors(k=3)
    cents = {}
    for a in sorted(set(artists)):
        m = vecs[artists == a].mean(axis=0)
        cents[a] = m / np.linalg.norm(m)
    for i, a in enumerate(cidx.artist_ids):
        others = sorted(((float(cents[a] @ cents[b]), b) for b in cents if b != a), reverse=True)[:3]
        assert [cidx.artist_ids[p] for p in pos[i]] == [b for _, b in others]
        np.testing.assert_allclose(sims[i], [s for s, _ in others], atol=1e-5)
    hits = cidx.search(cents["a2"], k=1)
    assert hits[0][0][0] == "a2"


def test_nprobe_is_raised_until_the_target_recall_and_the_tuned_value_loads(tmp_path):
    wd = Workdir.at(tmp_path)
    vecs = overlapping(6000, seed=6)
    add_vectors(wd, np.arange(6000), vecs)
    info = update_index(wd, MODEL, IndexConfig(ivf_threshold=1000, nprobe=1, recall_queries=200))
    assert info.kind == "ivf" and info.nprobe > 1 and info.recall_at_10 >= 0.96 and info.warning is None
    # the large-batch fallback was measured on a batch past faiss's BLAS size (4,000 queries at d 32)
    timing = info.batch_timing
    assert timing["batch"] == 4000 and timing["approx_ms_per_query"] > 0 and timing["exact_ms_per_query"] > 0
    assert info.exact_batch_from == (4000 if timing["exact_ms_per_query"] < timing["approx_ms_per_query"] else None)
    index, meta = load_index(wd, MODEL)
    from evaluator.embedding.index import _ivf_of

    assert _ivf_of(index).nprobe == meta["nprobe"] == info.nprobe  # the tuned value is what loads


def test_uniform_data_past_the_threshold_falls_back_to_exact_with_the_reason(tmp_path):
    """No clusters: the IVF needs more than a quarter of its lists, so the index is exact."""
    wd = Workdir.at(tmp_path)
    vecs = unit(np.random.default_rng(6).normal(size=(5000, 32)))
    add_vectors(wd, np.arange(5000), vecs)
    cfg = IndexConfig(ivf_threshold=1000, recall_queries=200)
    info = update_index(wd, MODEL, cfg)
    assert (info.kind, info.layout, info.recall_at_10, info.fallback_at) == ("flat", "Flat", 1.0, 5000)
    assert "a quarter of its 128 lists" in info.reason and info.warning is None
    assert json.loads(wd.index(MODEL).with_suffix(".json").read_text())["reason"] == info.reason
    # a few more vectors do not retry the IVF (it is retried at twice the size)
    add_vectors(wd, np.arange(5000, 5100), unit(np.random.default_rng(7).normal(size=(100, 32))))
    more = update_index(wd, MODEL, cfg)
    assert (more.kind, more.added, more.ntotal, more.rebuilt) == ("flat", 100, 5100, None)


def overlapping(n, d=32, supers=40, subs=5, seed=0, sub_spread=0.5, noise=0.8):
    """Two-level clusters: sibling clusters around a super-centre overlap, so a vector's
    nearest neighbours straddle clusters (and IVF cells), as CLIP neighbourhoods do."""
    r0 = np.random.default_rng(100)
    sup = unit(r0.normal(size=(supers, d)))
    centres = unit(np.repeat(sup, subs, axis=0) + sub_spread * r0.normal(size=(supers * subs, d)) / np.sqrt(d))
    rng = np.random.default_rng(seed)
    return unit(centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, d)) / np.sqrt(d))


def test_nprobe_ladder_is_finer_than_doubling():
    from evaluator.embedding.index import nprobe_ladder

    ladder = nprobe_ladder(1, 100)
    assert ladder[:8] == [1, 2, 3, 4, 6, 8, 11, 15] and ladder[-1] == 100
    assert all(b / a <= 1.5 for a, b in zip(ladder[1:], ladder[2:], strict=False))
    assert nprobe_ladder(500, 64) == [64]


def test_layout_lists_follow_sqrt_n_and_the_training_sample():
    from evaluator.embedding.index import ivf_layout

    assert ivf_layout(1_000_000, IndexConfig()) == (2564, 100_000)  # 4*sqrt(N) = 4000 lists, capped at 100k/39
    assert ivf_layout(250_000, IndexConfig()) == (2000, 100_000)
    assert ivf_layout(2_000_000, IndexConfig()) == (2564, 100_000)  # the floor decides up to 2M
    assert ivf_layout(10_000_000, IndexConfig()) == (12649, 500_000)  # 5% of 10M: 4*sqrt(N) lists
    assert ivf_layout(20_000, IndexConfig(train_size=1_000_000)) == (512, 20_000)  # 565 capped at 20k/39
    assert ivf_layout(1_000_000, IndexConfig(ivf_nlist_factor=0.1)) == (100, 25_600)  # no more than 256 per list
    assert ivf_layout(200_000, IndexConfig(train_size=1_000_000)) == (1788, 200_000)  # <= 256 per list: all of them


@pytest.mark.slow
def test_hnsw_ivf_past_the_threshold_reaches_the_target_on_held_out_queries(tmp_path):
    import faiss

    from evaluator.embedding.index import _ivf_of

    wd = Workdir.at(tmp_path)
    n = 20_000
    vecs = overlapping(n, seed=1)
    ids = np.arange(n, dtype=np.int64) * 5 + 3
    add_vectors(wd, ids, vecs)
    cfg = IndexConfig(ivf_threshold=10_000, recall_queries=300)
    info = update_index(wd, MODEL, cfg)
    # 1. the layout: ~4*sqrt(N) lists found by an HNSW quantizer, recorded in the meta JSON
    assert info.kind == "ivf" and info.nlist == 512 and info.train_size == n  # 565 capped at 20k/39
    assert info.layout == "IVF512_HNSW32,Flat"
    meta = json.loads(wd.index(MODEL).with_suffix(".json").read_text())
    assert (meta["layout"], meta["nlist"], meta["nprobe"]) == (info.layout, 512, info.nprobe)
    index, _ = load_index(wd, MODEL)
    ivf = _ivf_of(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat)
    # 2. spherical k-means: the centroids are unit vectors
    centroids = quantizer.reconstruct_n(0, ivf.nlist)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4)
    # 3. held-out queries (never indexed), same distribution: recall@10 at the tuned nprobe
    stored = vecs.astype(np.float16).astype(np.float32)
    queries = overlapping(400, seed=2).astype(np.float32)
    exact = ids[np.argsort(-(queries @ stored.T), axis=1)[:, :10]]
    _, found = index.search(queries, 10)
    held_out = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), found.tolist(), strict=True)])
    assert held_out >= cfg.target_recall
    assert info.nprobe < ivf.nlist // 4  # far from probing everything: the layout does the work
    # ... and probing a single list is measurably worse on these overlapping neighbourhoods
    ivf.nprobe = 1
    _, few = index.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), few.tolist(), strict=True)]) < held_out


@pytest.mark.slow
def test_hnsw_ivf_incremental_add_keeps_ids_and_survives_save_load(tmp_path):
    from evaluator.embedding.index import _ivf_of

    wd = Workdir.at(tmp_path)
    vecs = overlapping(12_000, seed=3)
    ids = np.random.default_rng(7).choice(2**62, size=12_000, replace=False).astype(np.int64)
    add_vectors(wd, ids[:10_000], vecs[:10_000])
    cfg = IndexConfig(ivf_threshold=5_000, recall_queries=200)
    first = update_index(wd, MODEL, cfg)
    assert first.kind == "ivf" and first.ntotal == 10_000
    before, _ = load_index(wd, MODEL)
    centroids = _ivf_of(before).quantizer.reconstruct_n(0, first.nlist)
    add_vectors(wd, ids[10_000:], vecs[10_000:])
    more = update_index(wd, MODEL, cfg)
    assert (more.kind, more.added, more.ntotal, more.nlist, more.layout) == ("ivf", 2_000, 12_000, first.nlist, first.layout)
    index, meta = load_index(wd, MODEL)
    ivf = _ivf_of(index)
    np.testing.assert_array_equal(ivf.quantizer.reconstruct_n(0, ivf.nlist), centroids)  # not retrained
    assert ivf.nprobe == meta["nprobe"] == more.nprobe
    stored = vecs.astype(np.float16).astype(np.float32)
    # the added vectors come back under their own image ids, each as its own nearest neighbour
    sims, found = index.search(stored[10_000:10_050], 1)
    np.testing.assert_array_equal(found[:, 0], ids[10_000:10_050])
    np.testing.assert_allclose(index.reconstruct(int(ids[11_999])), stored[11_999], atol=1e-6)
    # a reload answers exactly what the index answered before it was written
    again, _ = load_index(wd, MODEL)
    q = overlapping(50, seed=4).astype(np.float32)
    np.testing.assert_array_equal(again.search(q, 10)[1], index.search(q, 10)[1])
    assert sorted(np.asarray(__import__("faiss").vector_to_array(again.id_map)).tolist()) == sorted(ids.tolist())


@pytest.mark.parametrize("nprobe", [1, 2, 4, 8, 16, 64, 256])
def test_the_hnsw_quantizer_finds_the_lists_an_exact_scan_of_the_centroids_finds(nprobe):
    # The quantizer's efSearch follows nprobe: too narrow, and the nearest lists are missed
    # (or fewer than nprobe come back) however many are probed.
    import faiss

    from evaluator.embedding.index import _set_nprobe

    vecs = overlapping(20_000, seed=3)
    ivf = faiss.index_factory(vecs.shape[1], "IVF256_HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(vecs)
    _set_nprobe(ivf, nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert nprobe <= quantizer.hnsw.efSearch <= ivf.nlist
    queries = overlapping(300, seed=4)
    _, found = quantizer.search(queries, nprobe)
    centroids = quantizer.reconstruct_n(0, ivf.nlist)
    exact = np.argsort(-(queries @ centroids.T), axis=1)[:, :nprobe]
    assert (found >= 0).all()
    overlap = np.mean([len(set(a) & set(b)) / nprobe for a, b in zip(exact.tolist(), found.tolist(), strict=True)])
    assert overlap >= 0.98, overlap
