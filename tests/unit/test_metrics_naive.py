"""Each metric against a naive reference implementation (python loops) on seeded data,
and on embeddings with planted structure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.scoring import metrics as M


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def rng_unit(rng, n, d=12):
    return unit(rng.normal(size=(n, d)))


# ------------------------------------------------------------------ registry


def test_registry_lists_every_design_metric_with_its_properties():
    names = {m.name for m in M.list_metrics()}
    assert {
        "clip_score", "artist_similarity", "artist_rank", "top1", "top5", "mrr", "recognized",
        "recognized_auc_sdxl", "recognized_auc_sd1", "reference_similarity", "retrieval_map@1", "retrieval_map@5",
        "retrieval_map@10", "prototype_top1", "prototype_top5", "prototype_mrr", "discrimination_gap",
        "diversity", "content_leak", "fd_clip",
    } <= names
    assert M.get_metric("artist_rank").higher_is_better is False
    assert M.get_metric("fd_clip").needs_references and M.get_metric("fd_clip").level == "checkpoint"
    assert M.get_metric("diversity").level == "artist"
    table = M.metrics_table()
    assert "clip_score" in table and "definition" in table


def test_registry_suggests_close_names_and_refuses_duplicates():
    with pytest.raises(KeyError, match="did you mean clip_score"):
        M.get_metric("clip_scor")
    with pytest.raises(ValueError, match="already registered"):
        M.register_metric("top1", "again", True)(lambda inp: None)
    with pytest.raises(ValueError, match="level must be one of"):
        M.register_metric("x_new", "bad level", True, level="pixel")


# ------------------------------------------------------------------ image metrics vs loops


def test_clip_score_matches_loop():
    rng = np.random.default_rng(0)
    img, txt = rng_unit(rng, 50), rng_unit(rng, 50)
    naive = [100 * max(sum(float(a) * float(b) for a, b in zip(i, t, strict=True)), 0.0) for i, t in zip(img, txt, strict=True)]
    np.testing.assert_allclose(M.clip_score_values(img, txt), naive, rtol=1e-5, atol=1e-5)
    assert (M.clip_score_values(img, -img) == 0).all()


def test_identification_ranks_match_loop_with_ties_and_unknowns():
    rng = np.random.default_rng(1)
    classes = rng_unit(rng, 30)
    classes[7] = classes[3]  # a tie between two classes
    imgs = rng_unit(rng, 200)
    true = rng.integers(0, 30, size=200)
    true[:5] = -1  # images of no catalog artist
    ranks = M.identification_ranks(imgs, classes, true, chunk=17)
    for i in range(200):
        if true[i] < 0:
            assert math.isnan(ranks[i])
            continue
        sims = [float(np.dot(imgs[i], c)) for c in classes]
        expected = 1 + sum(1 for s in sims if s > sims[true[i]])
        assert ranks[i] == expected


def naive_ap_at_k(q, ql, db, dbl, k):
    sims = [float(np.dot(q, d)) for d in db]
    order = sorted(range(len(db)), key=lambda j: -sims[j])[:k]
    r = sum(1 for lab in dbl if lab == ql)
    if r == 0:
        return float("nan")
    hits, total = 0, 0.0
    for pos, j in enumerate(order, start=1):
        if dbl[j] == ql:
            hits += 1
            total += hits / pos
    return total / min(k, r)


def test_average_precision_at_k_matches_loop():
    rng = np.random.default_rng(2)
    db = rng_unit(rng, 40)
    dbl = np.array([f"a{i % 5}" for i in range(40)], dtype=object)
    q = rng_unit(rng, 25)
    ql = np.array([f"a{i % 6}" for i in range(25)], dtype=object)  # a5 has no references
    for k in (1, 5, 10, 50):
        got = M.average_precision_at_k(q, ql, db, dbl, k)
        want = [naive_ap_at_k(q[i], ql[i], db, dbl, k) for i in range(25)]
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_average_precision_is_one_for_perfect_retrieval():
    db = unit(np.eye(4)[[0, 0, 1, 1]] + 0.01)
    dbl = np.array(["x", "x", "y", "y"], dtype=object)
    got = M.average_precision_at_k(unit(np.eye(4)[[0, 1]]), np.array(["x", "y"], dtype=object), db, dbl, k=2)
    np.testing.assert_allclose(got, [1.0, 1.0])


def test_diversity_matches_pairwise_loop():
    rng = np.random.default_rng(3)
    vecs = rng_unit(rng, 60)
    codes = rng.integers(0, 7, size=60)
    codes[codes == 6] = 5
    codes[0] = 6  # a group of one
    div, n = M.group_diversity(vecs, codes, 7)
    for g in range(7):
        members = [v for v, c in zip(vecs, codes, strict=True) if c == g]
        if len(members) < 2:
            assert math.isnan(div[g])
            continue
        dists = [1 - float(np.dot(a, b)) for i, a in enumerate(members) for j, b in enumerate(members) if i != j]
        assert div[g] == pytest.approx(sum(dists) / len(dists), abs=1e-5)
        assert n[g] == len(members)


def test_content_leak_matches_loop():
    rng = np.random.default_rng(4)
    rows = [(c, a, t) for c in ("c1", "c2") for a in ("a", "b", "c") for t in ("s", "p", "l") for _ in range(2)]
    ck = np.array([r[0] for r in rows], dtype=object)
    ar = np.array([r[1] for r in rows], dtype=object)
    tp = np.array([r[2] for r in rows], dtype=object)
    vecs = rng_unit(rng, len(rows))
    got = M.content_leak_values(vecs, ck, ar, tp).set_index(["checkpoint", "artist_id"])["value"]
    for c in ("c1", "c2"):
        for a in ("a", "b", "c"):
            cross, within = [], []
            for i in range(len(rows)):
                if ck[i] != c or ar[i] != a:
                    continue
                for j in range(len(rows)):
                    if ck[j] != c or i == j:
                        continue
                    sim = float(np.dot(vecs[i], vecs[j]))
                    if ar[j] != a and tp[j] == tp[i]:
                        cross.append(sim)
                    elif ar[j] == a and tp[j] != tp[i]:
                        within.append(sim)
            assert got[(c, a)] == pytest.approx(np.mean(cross) - np.mean(within), abs=1e-5)


def test_frechet_distance_matches_eigen_of_product_and_known_shift():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 6))
    y = rng.normal(size=(90, 6)) @ rng.normal(size=(6, 6)) * 0.5 + 1.0
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # naive: tr sqrt(Cx Cy) = sum of square roots of the eigenvalues of the product
    tr = sum(math.sqrt(max(ev.real, 0)) for ev in np.linalg.eigvals(cx @ cy))
    naive = float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * tr)
    assert M.frechet_distance(x, y) == pytest.approx(naive, rel=1e-6)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, 2.0, 0, 0, 0, 0])
    assert M.frechet_distance(x, x + shift) == pytest.approx(5.0, rel=1e-8)
    with pytest.raises(ValueError, match="at least 2 vectors"):
        M.frechet_distance(x[:1], y)


def naive_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def test_roc_auc_known_case_ties_and_loop():
    assert M.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([1, 2, 3.0]), np.array([0, 1, 1])) == 1.0
    assert M.roc_auc(np.array([1, 2, 3.0]), np.array([1, 0, 0])) == 0.0
    assert math.isnan(M.roc_auc(np.array([1, 2.0]), np.array([1, 1])))
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 5, size=120).astype(float)  # many ties
    labels = rng.random(120) < 0.4
    assert M.roc_auc(scores, labels) == pytest.approx(naive_auc(scores, labels))


def test_label_parsing():
    assert M.label_to_bool("Yes") is True and M.label_to_bool("no") is False
    assert M.label_to_bool("Unsure") is None and M.label_to_bool(None) is None and M.label_to_bool("") is None


# ------------------------------------------------------------------ planted structure


def planted(n_artists=300, per_artist=6, noise=0.5, d=32, seed=0, baseline_per_ckpt=4):
    """Artist text vectors; images = own text + noise; baseline images = pure noise."""
    rng = np.random.default_rng(seed)
    text = rng_unit(rng, n_artists, d)
    art = np.repeat(np.arange(n_artists), per_artist)
    imgs = unit(text[art] + noise * rng.normal(size=(len(art), d)) / math.sqrt(d))
    return rng, text, art, imgs


def inputs_for(imgs, art_names, text, seeds, ckpt="c", templates=None, baseline=None, labels=None):
    n = len(imgs)
    return M.EvalInputs(
        image_ids=np.arange(n, dtype=np.int64),
        vecs=imgs,
        checkpoint=np.array([ckpt] * n, dtype=object),
        artist_id=np.asarray(art_names, dtype=object),
        template=np.asarray(templates if templates is not None else ["style"] * n, dtype=object),
        seed=np.asarray(seeds, dtype=np.int64),
        prompt_vecs=None,
        catalog_ids=[f"artist-{i}" for i in range(len(text))],
        artist_text_vecs=text,
        labels=labels or {},
    )


def test_planted_clusters_are_identified_and_shuffled_labels_are_at_chance():
    rng, text, art, imgs = planted()
    names = [f"artist-{i}" for i in art]
    seeds = np.tile(np.arange(6), 300)
    inp = inputs_for(imgs, names, text, seeds)
    top1 = M.get_metric("top1").fn(inp)
    assert top1.mean() > 0.95
    assert M.get_metric("mrr").fn(inp).mean() > 0.95
    shuffled = inputs_for(imgs, list(rng.permutation(names)), text, seeds)
    chance = 1 / 300
    assert M.get_metric("top1").fn(shuffled).mean() < 5 * chance + 0.01
    assert M.get_metric("artist_rank").fn(shuffled).mean() == pytest.approx(150, rel=0.15)


def test_planted_recognition_margin_recognized_and_auc():
    rng = np.random.default_rng(7)
    d, n_art, seeds = 32, 40, 4
    text = rng_unit(rng, n_art, d)
    known = np.arange(n_art) < 20  # the first 20 artists are "known": images carry their style
    vecs, names, sd = [], [], []
    for a in range(n_art):
        for s in range(seeds):
            v = (text[a] if known[a] else 0) + 0.6 * rng.normal(size=d) / math.sqrt(d)
            vecs.append(v)
            names.append(f"artist-{a}")
            sd.append(s)
    for s in range(seeds):  # baseline images: no artist
        vecs.append(0.6 * rng.normal(size=d) / math.sqrt(d))
        names.append("_baseline")
        sd.append(s)
    labels = {"recognized_sdxl": {f"artist-{a}": bool(known[a]) for a in range(n_art)}}
    inp = inputs_for(unit(np.array(vecs)), names, text, sd, labels=labels)
    margins = M.get_metric("recognition_margin").fn(inp).set_index("artist_id")
    recognized = M.get_metric("recognized").fn(inp).set_index("artist_id")["value"]
    for a in range(n_art):
        key = f"artist-{a}"
        if known[a]:
            assert margins.loc[key, "value"] > 0.3 and recognized[key] == 1.0
        else:
            assert abs(margins.loc[key, "value"]) < 0.3
    assert recognized[[f"artist-{a}" for a in range(20, n_art)]].mean() < 0.3
    auc = M.get_metric("recognized_auc_sdxl").fn(inp)
    assert auc["value"].iloc[0] == pytest.approx(1.0)
    assert M.get_metric("recognized_auc_sd1").fn(inp).empty  # no such labels


def test_recognition_margin_matches_loop():
    rng = np.random.default_rng(8)
    text = rng_unit(rng, 3, 8)
    names = ["artist-0"] * 4 + ["artist-1"] * 4 + ["_baseline"] * 2
    seeds = [0, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    vecs = rng_unit(rng, 10, 8)
    inp = inputs_for(vecs, names, text, seeds)
    got = M.recognition_margins(inp).set_index(["artist_id", "seed"])["value"]
    for a in (0, 1):
        for s in (0, 1):
            own = [float(np.dot(vecs[i], text[a])) for i in range(8) if names[i] == f"artist-{a}" and seeds[i] == s]
            base = [float(np.dot(vecs[i], text[a])) for i in range(8, 10) if seeds[i] == s]
            assert got[(f"artist-{a}", s)] == pytest.approx(np.mean(own) - np.mean(base), abs=1e-6)


def test_planted_diversity_detects_mode_collapse():
    rng = np.random.default_rng(9)
    collapsed = np.repeat(rng_unit(rng, 1), 6, axis=0)
    spread = rng_unit(rng, 6)
    vecs = np.concatenate([collapsed, spread])
    inp = inputs_for(vecs, ["artist-0"] * 6 + ["artist-1"] * 6, rng_unit(rng, 2), list(range(6)) * 2)
    div = M.get_metric("diversity").fn(inp).set_index("artist_id")["value"]
    assert div["artist-0"] == pytest.approx(0.0, abs=1e-6)
    assert div["artist-1"] > 0.5


def test_planted_references_give_similarity_map_and_fd():
    rng = np.random.default_rng(10)
    d = 16
    style = rng_unit(rng, 3, d)
    refs = unit(np.repeat(style, 5, axis=0) + 0.3 * rng.normal(size=(15, d)) / math.sqrt(d))
    ref_artist = np.repeat(np.array(["artist-0", "artist-1", "artist-2"], dtype=object), 5)
    imgs = unit(np.repeat(style, 4, axis=0) + 0.3 * rng.normal(size=(12, d)) / math.sqrt(d))
    names = np.repeat(np.array(["artist-0", "artist-1", "artist-2"], dtype=object), 4)
    inp = inputs_for(imgs, names, style, [0, 1, 2, 3] * 3)
    inp.ref_vecs, inp.ref_artist = refs, ref_artist
    sim = M.get_metric("reference_similarity").fn(inp)
    assert (sim > 0.8).all()
    ap = M.get_metric("retrieval_map@10").fn(inp)
    assert ap.mean() > 0.95
    # a checkpoint whose images ignore the styles is farther from the references
    fd_good = M.get_metric("fd_clip").fn(inp)["value"].iloc[0]
    inp_bad = inputs_for(rng_unit(rng, 12, d), names, style, [0, 1, 2, 3] * 3)
    inp_bad.ref_vecs, inp_bad.ref_artist = refs, ref_artist
    assert M.get_metric("fd_clip").fn(inp_bad)["value"].iloc[0] > fd_good
    # without references these metrics are undefined, not zero
    inp_none = inputs_for(imgs, names, style, [0, 1, 2, 3] * 3)
    assert np.isnan(M.get_metric("reference_similarity").fn(inp_none)).all()
    assert M.get_metric("fd_clip").fn(inp_none).empty
