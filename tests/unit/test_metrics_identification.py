"""Issue 11, points 6-8: identification against reference prototypes, retrieval_map@1/5/10,
the CSLS readout and the discrimination gap, each against a naive python loop, on
planted styles (near perfect) and on shuffled labels (at chance)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluator.errors import InputError
from evaluator.scoring import metrics as M
from evaluator.scoring.aggregate import ScoringBatch, compute_scores, scored_meta
from evaluator.scoring.run import ScoreConfig
from evaluator.scoring.stats import BootstrapConfig


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(n_artists=12, per_artist=5, refs_per_artist=6, noise=0.6, d=24, seed=0):
    """Artist styles; reference works and images = style + noise (images of every artist)."""
    rng = np.random.default_rng(seed)
    style = unit(rng.normal(size=(n_artists, d)))
    ref_art = np.repeat(np.arange(n_artists), refs_per_artist)
    refs = unit(style[ref_art] + noise * rng.normal(size=(len(ref_art), d)) / math.sqrt(d))
    img_art = np.repeat(np.arange(n_artists), per_artist)
    imgs = unit(style[img_art] + noise * rng.normal(size=(len(img_art), d)) / math.sqrt(d))
    names = np.array([f"artist-{i}" for i in range(n_artists)], dtype=object)
    return rng, imgs, names[img_art], refs, names[ref_art], style


def inputs_for(imgs, art, refs=None, ref_art=None, text=None, ckpt="c", **extra) -> M.EvalInputs:
    n = len(imgs)
    text = text if text is not None else imgs[:1]
    return M.EvalInputs(
        image_ids=np.arange(n, dtype=np.int64), vecs=imgs, checkpoint=np.array([ckpt] * n, dtype=object),
        artist_id=np.asarray(art, dtype=object), template=np.array(["style"] * n, dtype=object),
        seed=np.tile(np.arange(5), n // 5 + 1)[:n].astype(np.int64), prompt_vecs=None,
        catalog_ids=[f"artist-{i}" for i in range(len(text))], artist_text_vecs=text,
        ref_vecs=refs, ref_artist=None if ref_art is None else np.asarray(ref_art, dtype=object), **extra,
    )


# ------------------------------------------------------------------ naive references


def naive_prototypes(refs, ref_art):
    out = {}
    for a in sorted(set(ref_art)):
        members = [r for r, b in zip(refs, ref_art, strict=True) if b == a]
        mean = [sum(float(m[j]) for m in members) / len(members) for j in range(len(members[0]))]
        norm = math.sqrt(sum(v * v for v in mean))
        out[a] = [v / norm for v in mean]
    return out


def dot(a, b) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b, strict=True))


def naive_csls_r(vec, pool, k) -> float:
    sims = sorted((dot(vec, p) for p in pool), reverse=True)
    return sum(sims[:k]) / min(k, len(sims))


def naive_rank(img, true, classes: dict, csls_pool=None, k=10) -> int:
    """Rank of ``true`` among ``classes``: cosine, or full CSLS 2cos - r(c) - r(x)."""
    names = sorted(classes)
    if csls_pool is None:
        score = {c: dot(img, classes[c]) for c in names}
    else:
        r_img = naive_csls_r(img, [classes[c] for c in names], k)
        score = {c: 2 * dot(img, classes[c]) - naive_csls_r(classes[c], csls_pool, k) - r_img for c in names}
    return 1 + sum(1 for c in names if score[c] > score[true] + 1e-9)


# ------------------------------------------------------------------ prototype identification


def test_prototype_ranks_match_the_naive_loop_cosine_and_csls():
    rng, imgs, art, refs, ref_art, _ = planted(noise=2.0, seed=1)
    art = art.copy()
    art[:3] = "artist-unreferenced"  # no references: no rank
    protos = naive_prototypes(refs, ref_art)
    for readout in ("cosine", "csls"):
        inp = inputs_for(imgs, art, refs, ref_art, readout=readout, csls_k=4)
        top1, top5 = M.get_metric("prototype_top1").fn(inp), M.get_metric("prototype_top5").fn(inp)
        mrr = M.get_metric("prototype_mrr").fn(inp)
        assert np.isnan(top1[:3]).all() and np.isnan(mrr[:3]).all()
        for i in range(3, len(imgs)):
            rank = naive_rank(imgs[i], art[i], protos, csls_pool=imgs if readout == "csls" else None, k=4)
            assert (top1[i], top5[i]) == (float(rank <= 1), float(rank <= 5)), (readout, i)
            assert mrr[i] == pytest.approx(1 / rank)


def test_csls_penalty_matches_the_naive_loop_across_chunks():
    rng = np.random.default_rng(2)
    classes, pool = unit(rng.normal(size=(7, 10))), unit(rng.normal(size=(53, 10)))
    got = M.csls_penalty(classes, pool, k=5, chunk=8)
    np.testing.assert_allclose(got, [naive_csls_r(c, pool, 5) for c in classes], rtol=1e-5)
    # a pool smaller than k: the mean over the whole pool
    np.testing.assert_allclose(M.csls_penalty(classes, pool[:2], k=5), [naive_csls_r(c, pool[:2], 5) for c in classes],
                               rtol=1e-5)


def test_csls_penalty_is_exact_and_the_same_bit_for_bit_for_any_chunking_or_split_of_the_pool():
    """r(c) from float64 cosines: equal to a float64 reference to its last bits, and equal bit for
    bit whatever the chunks, the order of the pool or how a launch splits it among ranks."""
    rng = np.random.default_rng(5)
    classes = unit(rng.normal(size=(40, 24))).astype(np.float32)
    pool = unit(rng.normal(size=(700, 24))).astype(np.float32)
    # near-ties at the k-th: 300 rows whose cosine with class 0 is 0.99 within ~1e-7, under
    # float32's matmul error, so float32 alone would pick a wrong top k among them
    other = unit(rng.normal(size=(300, 24)))
    other -= (other @ classes[0].astype(np.float64))[:, None] * classes[0]
    tied = unit(0.99 * classes[0] + np.sqrt(1 - 0.99**2) * unit(other) + rng.normal(size=(300, 24)) * 1e-8)
    pool = np.vstack([pool, tied]).astype(np.float32)
    exact = np.sort(classes.astype(np.float64) @ pool.astype(np.float64).T, axis=1)[:, -7:].mean(axis=1)
    whole = M.csls_penalty(classes, pool, k=7)
    np.testing.assert_allclose(whole, exact, rtol=0, atol=1e-15)
    for chunk in (1, 5, 64, 10_000):
        assert np.array_equal(M.csls_penalty(classes, pool, k=7, chunk=chunk), whole), chunk
    rising = pool[np.argsort(pool @ classes[0])]  # every chunk raises class 0's k-th: the pruning's worst case
    assert np.array_equal(M.csls_penalty(classes, rising, k=7, chunk=3), whole)
    for n_parts in (2, 3, 8):
        share = np.arange(len(pool)) % n_parts
        parts = [M.csls_top_k(classes, pool[share == r], k=7) for r in range(n_parts)]
        assert np.array_equal(M.csls_penalty_of_parts(parts, k=7), whole), n_parts
    parts = [M.csls_top_k(classes, pool[:4], k=7), M.csls_top_k(classes, pool[:0], k=7),
             M.csls_top_k(classes, pool[4:], k=7)]  # a part smaller than k, and an empty one
    assert [p.shape[1] for p in parts] == [4, 0, 7]
    assert np.array_equal(M.csls_penalty_of_parts(parts, k=7), whole)
    assert np.array_equal(M.csls_penalty(classes, pool[:0], k=7), np.zeros(len(classes)))


def test_csls_marks_down_a_hub_that_cosine_falls_for():
    """Images share a common direction in varying amounts (as CLIP's do); a class text
    along it is the nearest text of most images under cosine. CSLS sees the hub."""
    rng = np.random.default_rng(1)
    d, n_art, per = 32, 10, 8
    style, common = unit(rng.normal(size=(n_art, d))), unit(rng.normal(size=(1, d)))
    art = np.repeat(np.arange(n_art), per)
    amount = rng.uniform(0, 3, size=(len(art), 1))
    imgs = unit(style[art] + amount * common + 0.5 * rng.normal(size=(len(art), d)) / math.sqrt(d))
    text = np.vstack([style, common])  # artist-10 is the hub
    names = np.array([f"artist-{i}" for i in art], dtype=object)
    cosine, csls = inputs_for(imgs, names, text=text), inputs_for(imgs, names, text=text, readout="csls")
    hub = np.full(len(imgs), n_art)
    assert (M.identification_ranks(imgs, text, hub) == 1).mean() > 0.6
    penalty = csls.readout_penalty(text)
    assert (M.identification_ranks(imgs, text, hub, class_penalty=penalty) == 1).mean() < 0.5
    assert M.get_metric("top1").fn(csls).mean() > M.get_metric("top1").fn(cosine).mean() + 0.1


def test_planted_styles_are_identified_and_shuffled_labels_fall_to_chance():
    rng, imgs, art, refs, ref_art, _ = planted(n_artists=20, per_artist=10, noise=0.8, seed=4)
    inp = inputs_for(imgs, art, refs, ref_art)
    assert M.get_metric("prototype_top1").fn(inp).mean() > 0.95
    assert M.get_metric("retrieval_map@1").fn(inp).mean() > 0.95
    chance = 1 / 20
    for readout in ("cosine", "csls"):
        shuffled = inputs_for(imgs, rng.permutation(art), refs, ref_art, readout=readout)
        assert abs(M.get_metric("prototype_top1").fn(shuffled).mean() - chance) < 0.06
        assert abs(M.get_metric("prototype_top5").fn(shuffled).mean() - 5 * chance) < 0.1
        assert abs(M.get_metric("retrieval_map@1").fn(shuffled).mean() - chance) < 0.06


def test_prototype_identification_needs_two_artists_with_references():
    rng, imgs, art, refs, ref_art, _ = planted(n_artists=3)
    keep = ref_art == "artist-0"
    one = inputs_for(imgs, art, refs[keep], ref_art[keep])
    assert np.isnan(M.get_metric("prototype_top1").fn(one)).all()
    assert M.get_metric("prototype_top1").n_classes(one) == 1


# ------------------------------------------------------------------ retrieval_map@1/5/10


def naive_ap(q, ql, db, dbl, k):
    order = sorted(range(len(db)), key=lambda j: -dot(q, db[j]))[:k]
    r = sum(1 for lab in dbl if lab == ql)
    if r == 0:
        return float("nan")
    hits, total = 0, 0.0
    for pos, j in enumerate(order, start=1):
        if dbl[j] == ql:
            hits += 1
            total += hits / pos
    return total / min(k, r)


def test_retrieval_map_at_1_5_10_match_the_naive_loop_and_divide_by_min_k_r():
    rng, imgs, art, refs, ref_art, _ = planted(noise=2.5, refs_per_artist=3, seed=5)
    refs, ref_art = refs[:-1], ref_art[:-1]  # one artist with 2 references: AP@5 divides by 2
    inp = inputs_for(imgs, art, refs, ref_art)
    for k in (1, 5, 10):
        got = M.get_metric(f"retrieval_map@{k}").fn(inp)
        want = [naive_ap(imgs[i], art[i], refs, ref_art, k) for i in range(len(imgs))]
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    # one sort for every k gives what one k at a time gives
    many = M.average_precision_at_ks(imgs, art, refs, ref_art, (1, 3, 50))
    for k, values in many.items():
        np.testing.assert_allclose(values, M.average_precision_at_k(imgs, art, refs, ref_art, k), equal_nan=True)


def test_a_k_outside_the_run_s_setting_stores_nothing_and_a_new_k_registers_once(monkeypatch):
    monkeypatch.setattr(M, "_REGISTRY", dict(M._REGISTRY))
    rng, imgs, art, refs, ref_art, _ = planted(seed=6)
    inp = inputs_for(imgs, art, refs, ref_art, retrieval_ks=(1,))
    assert np.isnan(M.get_metric("retrieval_map@10").fn(inp)).all()
    assert M.register_retrieval_map(3) == M.register_retrieval_map(3) == "retrieval_map@3"
    inp3 = inputs_for(imgs, art, refs, ref_art, retrieval_ks=(3,))
    want = [naive_ap(imgs[i], art[i], refs, ref_art, 3) for i in range(len(imgs))]
    np.testing.assert_allclose(M.get_metric("retrieval_map@3").fn(inp3), want, rtol=1e-6)
    with pytest.raises(InputError, match="integer >= 1"):
        M.register_retrieval_map(0)


# ------------------------------------------------------------------ discrimination gap


def naive_gap(refs, ref_art, a):
    own = [i for i, b in enumerate(ref_art) if b == a]
    other = [i for i, b in enumerate(ref_art) if b != a]
    same = [dot(refs[i], refs[j]) for i in own for j in own if i != j]
    cross = [dot(refs[i], refs[j]) for i in own for j in other]
    return sum(same) / len(same) - sum(cross) / len(cross)


def test_discrimination_gap_matches_pairs_its_ci_a_naive_bootstrap_and_says_why_when_missing():
    rng, imgs, art, refs, ref_art, _ = planted(n_artists=5, refs_per_artist=8, noise=1.5, seed=7)
    refs, ref_art = np.vstack([refs, refs[:1]]), np.append(ref_art, "artist-lonely")  # one work only
    art = np.append(art, "artist-lonely")
    imgs = np.vstack([imgs, imgs[:1]])
    inp = inputs_for(imgs, art, refs, ref_art, bootstrap=BootstrapConfig(n_boot=4000, seed=1))
    got = M.get_metric("discrimination_gap").fn(inp).set_index("artist_id")
    for a in sorted(set(ref_art) - {"artist-lonely"}):
        assert got.loc[a, "value"] == pytest.approx(naive_gap(refs, ref_art, a), abs=1e-6)
        assert got.loc[a, "n"] == 8 and got.loc[a, "ci_over"] == "references"
        # the interval against a naive bootstrap of the per-work gaps
        own = [i for i, b in enumerate(ref_art) if b == a]
        per_work = np.array([np.mean([dot(refs[i], refs[j]) for j in own if j != i])
                             - np.mean([dot(refs[i], refs[j]) for j, b in enumerate(ref_art) if b != a]) for i in own])
        boot_rng = np.random.default_rng(99)
        boot = [per_work[boot_rng.integers(0, 8, 8)].mean() for _ in range(6000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        width = hi - lo
        assert abs(got.loc[a, "ci_low"] - lo) < 0.1 * width and abs(got.loc[a, "ci_high"] - hi) < 0.1 * width
    lonely = got.loc["artist-lonely"]
    assert math.isnan(lonely["value"]) and "needs 2 or more" in lonely["reason"]


def test_discrimination_gap_is_positive_for_planted_styles_and_zero_for_shuffled_works():
    rng, imgs, art, refs, ref_art, _ = planted(n_artists=8, refs_per_artist=10, noise=1.0, seed=8)
    real = M.get_metric("discrimination_gap").fn(inputs_for(imgs, art, refs, ref_art))
    assert (real["ci_low"] > 0).all()
    shuffled = M.get_metric("discrimination_gap").fn(inputs_for(imgs, art, refs, rng.permutation(ref_art)))
    assert abs(shuffled["value"].mean()) < 0.03
    assert ((shuffled["ci_low"] < 0) & (shuffled["ci_high"] > 0)).mean() >= 0.75


# ------------------------------------------------------------------ through the aggregation


def test_identification_rows_carry_n_classes_and_what_n_counts():
    rng, imgs, art, refs, ref_art, style = planted(n_artists=6, per_artist=5, seed=9)
    inp = inputs_for(np.vstack([imgs, imgs]), np.append(art, art), refs, ref_art, text=style,
                     ckpt="x")
    inp.checkpoint = np.array(["base"] * len(imgs) + ["ft"] * len(imgs), dtype=object)
    meta = pd.DataFrame({"image_id": inp.image_ids, "checkpoint": inp.checkpoint, "artist_id": inp.artist_id,
                         "template": inp.template, "seed": inp.seed})
    batch = ScoringBatch(inp, scored_meta(meta), np.ones(inp.n, dtype=bool),
                         pd.DataFrame(columns=["image_id", "metric", "value"]), "m", [("base", "ft")],
                         BootstrapConfig(n_boot=50), 2)
    tables = compute_scores(batch)
    art_rows = tables.artist_scores.set_index("metric")
    assert set(art_rows.loc["prototype_top1", "n_classes"]) == {6}
    assert set(art_rows.loc["top1", "n_classes"]) == {6}
    assert art_rows.loc["diversity", "n_classes"].isna().all()
    assert (tables.artist_scores["n_images"] == tables.artist_scores["n"]).all()
    ck = tables.checkpoint_scores.set_index("metric")
    assert set(ck.loc["prototype_top1", "n_images"]) == {30} and ck.loc["prototype_top1", "n_artists"].isna().all()
    assert set(ck.loc["discrimination_gap", "n_artists"]) == {6}
    cmp = tables.comparisons
    assert "prototype_top1" in set(cmp["metric"]) and (cmp["n_seeds"] == cmp["n"]).all()


def test_score_config_refuses_an_unknown_readout_and_bad_ks():
    with pytest.raises(InputError, match="readout must be one of cosine, csls"):
        ScoreConfig(model="m", readout="dot").validate()
    with pytest.raises(InputError, match="retrieval_ks must be integers >= 1"):
        ScoreConfig(model="m", retrieval_ks=(0, 5)).validate()


def test_top_k_breaks_ties_by_position_like_a_stable_sort_and_ap_is_chunked():
    rng = np.random.default_rng(11)
    sims = rng.integers(0, 4, size=(40, 30)).astype(np.float32)  # many ties
    for k in (1, 3, 7, 30, 31):
        want = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(M.top_k_stable(sims, k), want)
    db = unit(rng.normal(size=(12, 6)))
    db = np.vstack([db, db])  # every work twice: tied similarities
    dbl = np.array([f"a{i % 5}" for i in range(24)], dtype=object)
    q = unit(rng.normal(size=(23, 6)))
    ql = np.array([f"a{i % 6}" for i in range(23)], dtype=object)
    got = M.average_precision_at_ks(q, ql, db, dbl, (1, 5, 10), chunk=4)
    for k in (1, 5, 10):
        np.testing.assert_allclose(got[k], [naive_ap(q[i], ql[i], db, dbl, k) for i in range(23)], equal_nan=True)


def test_reference_similarity_is_the_cosine_to_the_naive_prototype():
    rng, imgs, art, refs, ref_art, _ = planted(noise=1.5, seed=12)
    art = art.copy()
    art[0] = "artist-unreferenced"
    got = M.get_metric("reference_similarity").fn(inputs_for(imgs, art, refs, ref_art))
    protos = naive_prototypes(refs, ref_art)
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], [dot(imgs[i], protos[art[i]]) for i in range(1, len(imgs))], rtol=1e-5)
