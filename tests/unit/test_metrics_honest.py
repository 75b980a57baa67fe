"""Issue 11, conclusions that were silently wrong: each against a naive numpy reference.

- no interval -> `undecided`, never `kept`;
- images without seeds are bootstrapped over images (a naive loop gives the same CI);
- `recognized` without a margin CI is NULL, not the point value;
- an AUC has n_pos / n_neg and a CI; NULL below 5 of a class;
- clip_score of an image without a prompt is NULL.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluator.scoring import metrics as M
from evaluator.scoring.stats import BootstrapConfig, grouped_bootstrap, two_sample_ci, verdict


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def naive_two_sample(base: np.ndarray, other: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05):
    """Percentile CI of mean(other*) - mean(base*), each side resampled on its own (a loop)."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        b = base[rng.integers(0, len(base), len(base))]
        o = other[rng.integers(0, len(other), len(other))]
        deltas.append(o.mean() - b.mean())
    return np.percentile(deltas, [100 * alpha / 2, 100 * (1 - alpha / 2)])


def naive_mean_ci(values: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05):
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])


def naive_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def close_ci(got, want, width: float, tol: float = 0.12) -> None:
    """Two bootstrap bounds from different random streams agree within Monte-Carlo error."""
    assert abs(got[0] - want[0]) <= tol * width and abs(got[1] - want[1]) <= tol * width, (got, want)


# ------------------------------------------------------------------ verdicts


def test_no_interval_is_undecided_never_kept():
    assert verdict(float("nan"), float("nan"), True) == "undecided"
    assert verdict(float("nan"), 0.5, False) == "undecided"
    assert verdict(-0.1, 0.2, True) == "kept"
    assert verdict(0.1, 0.2, True) == "gained"


# ------------------------------------------------------------------ bootstrap over images


def test_two_sample_ci_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    # equal sizes on both sides included: the two sides must get independent draws
    base = [rng.normal(0.0, 1.0, 7), rng.normal(0.0, 1.0, 5), rng.normal(0.0, 0.2, 12), np.array([1.0])]
    other = [rng.normal(0.5, 1.0, 9), rng.normal(0.2, 1.0, 5), rng.normal(-0.3, 0.2, 12), np.array([2.0, 3.0])]
    cfg = BootstrapConfig(n_boot=8000, seed=1)
    delta, lo, hi = two_sample_ci(base, other, cfg)
    for g in range(3):
        want = naive_two_sample(base[g], other[g], 8000, seed=99)
        assert delta[g] == pytest.approx(other[g].mean() - base[g].mean())
        close_ci((lo[g], hi[g]), want, want[1] - want[0], tol=0.05)
    # one value on a side: a delta, no interval
    assert delta[3] == pytest.approx(1.5) and math.isnan(lo[3]) and math.isnan(hi[3])


def test_grouped_bootstrap_over_images_when_no_seed_is_known():
    rng = np.random.default_rng(5)
    values = rng.normal(0.3, 0.5, 10)
    seedless = pd.DataFrame({"g": "a", "image_id": np.arange(10), "seed": -1, "value": values})
    seeded = pd.DataFrame({"g": "b", "image_id": np.arange(10, 20), "seed": np.repeat([0, 1], 5), "value": values})
    single = pd.DataFrame({"g": "c", "image_id": [30], "seed": [-1], "value": [1.0]})
    out = grouped_bootstrap(pd.concat([seedless, seeded, single]), ["g"], config=BootstrapConfig(n_boot=4000),
                            image_col="image_id").set_index("g")
    # today's behaviour gave one "seed" and no interval; now: over images, and the naive loop agrees
    assert out.at["a", "ci_over"] == "images" and out.at["a", "n"] == 10 and out.at["a", "n_seeds"] == 0
    want = naive_mean_ci(values, 4000, seed=7)
    close_ci((out.at["a", "ci_low"], out.at["a", "ci_high"]), want, want[1] - want[0])
    assert pd.isna(out.at["a", "reason"])
    assert out.at["b", "ci_over"] == "seeds" and out.at["b", "n_seeds"] == 2
    assert out.at["c", "ci_over"] == "images" and math.isnan(out.at["c", "ci_low"])
    assert out.at["c", "reason"] == "no seeds and n_images < 2"


# ------------------------------------------------------------------ recognized, AUC, clip_score


def recognition_inputs(n_art=12, per_artist=1, seeds_known=True, labels=None, seed=7):
    """Artists whose images carry their text (the first half) or not, plus baseline noise."""
    rng = np.random.default_rng(seed)
    d = 32
    text = unit(rng.normal(size=(n_art, d)))
    vecs, names, sd = [], [], []
    for a in range(n_art):
        for i in range(per_artist):
            vecs.append((text[a] if a < n_art // 2 else 0) + 0.6 * rng.normal(size=d) / math.sqrt(d))
            names.append(f"artist-{a}")
            sd.append(i if seeds_known else -1)
    for i in range(max(per_artist, 2)):
        vecs.append(0.6 * rng.normal(size=d) / math.sqrt(d))
        names.append("_baseline")
        sd.append(i if seeds_known else -1)
    n = len(vecs)
    return M.EvalInputs(
        image_ids=np.arange(n, dtype=np.int64), vecs=unit(np.array(vecs)),
        checkpoint=np.array(["c"] * n, dtype=object), artist_id=np.array(names, dtype=object),
        template=np.array(["style"] * n, dtype=object), seed=np.array(sd, dtype=np.int64), prompt_vecs=None,
        catalog_ids=[f"artist-{i}" for i in range(n_art)], artist_text_vecs=text, labels=labels or {},
        bootstrap=BootstrapConfig(n_boot=500),
    )


def test_recognized_with_one_seed_is_null_not_the_point_value():
    inp = recognition_inputs(per_artist=1)
    margins = M.get_metric("recognition_margin").fn(inp).set_index("artist_id")
    recognized = M.get_metric("recognized").fn(inp).set_index("artist_id")
    # the known artists' margins are clearly positive, but one seed gives no interval
    assert (margins.loc[[f"artist-{a}" for a in range(6)], "value"] > 0.3).all()
    assert recognized["value"].isna().all()
    assert (recognized["reason"] == "recognition_margin has no CI (n_seeds < 2)").all()


def test_recognized_without_seeds_is_decided_over_images():
    inp = recognition_inputs(per_artist=6, seeds_known=False)
    margins = M.get_metric("recognition_margin").fn(inp).set_index("artist_id")
    assert (margins["ci_over"] == "images").all() and (margins["n"] == 6).all()
    recognized = M.get_metric("recognized").fn(inp).set_index("artist_id")["value"]
    assert recognized[[f"artist-{a}" for a in range(6)]].eq(1.0).all()
    # the per-image margins, bootstrapped naively, give the stored interval
    per_image = M.recognition_margin_images(inp)
    vals = per_image.loc[per_image["artist_id"] == "artist-0", "value"].to_numpy()
    want = naive_mean_ci(vals, 4000, seed=3)
    close_ci((margins.at["artist-0", "ci_low"], margins.at["artist-0", "ci_high"]), want, want[1] - want[0], tol=0.2)


def test_auc_is_null_below_five_of_a_class_with_the_counts():
    labels = {"recognized_sdxl": {f"artist-{a}": a < 4 for a in range(12)}}  # 4 yes, 8 no
    auc = M.get_metric("recognized_auc_sdxl").fn(recognition_inputs(labels=labels)).iloc[0]
    assert math.isnan(auc["value"]) and (auc["n_pos"], auc["n_neg"]) == (4, 8)
    assert "n_pos = 4" in auc["reason"] and "fewer than 5" in auc["reason"]


def test_auc_has_its_class_counts_and_a_bootstrap_ci_matching_a_naive_loop():
    labels = {"recognized_sdxl": {f"artist-{a}": a < 6 or a == 7 for a in range(14)}}  # 7 yes, 7 no
    inp = recognition_inputs(n_art=14, labels=labels)
    inp.bootstrap = BootstrapConfig(n_boot=3000)
    row = M.get_metric("recognized_auc_sdxl").fn(inp).iloc[0]
    margins = M.get_metric("recognition_margin").fn(inp)
    y = margins["artist_id"].map(labels["recognized_sdxl"]).to_numpy()
    s = margins["value"].to_numpy()
    assert (row["n_pos"], row["n_neg"]) == (7, 7) and pd.isna(row["reason"])
    assert row["value"] == pytest.approx(naive_auc(s, y))
    rng = np.random.default_rng(11)
    pos, neg = s[y], s[~y]
    boot = []
    for _ in range(3000):
        p, n = pos[rng.integers(0, 7, 7)], neg[rng.integers(0, 7, 7)]
        boot.append(naive_auc(np.r_[p, n], np.r_[np.ones(7, bool), np.zeros(7, bool)]))
    want = np.percentile(boot, [2.5, 97.5])
    close_ci((row["ci_low"], row["ci_high"]), want, max(want[1] - want[0], 0.05), tol=0.2)
    assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_clip_score_is_null_without_a_prompt():
    rng = np.random.default_rng(2)
    vecs = unit(rng.normal(size=(4, 8)))
    inp = M.EvalInputs(
        image_ids=np.arange(4), vecs=vecs, checkpoint=np.array(["c"] * 4, dtype=object),
        artist_id=np.array(["a"] * 4, dtype=object), template=np.array(["import"] * 4, dtype=object),
        seed=np.full(4, -1), prompt_vecs=unit(rng.normal(size=(4, 8))), catalog_ids=["a"],
        artist_text_vecs=unit(rng.normal(size=(1, 8))), has_prompt=np.array([True, False, True, False]),
    )
    values = M.get_metric("clip_score").fn(inp)
    naive = [100 * max(float(vecs[i] @ inp.prompt_vecs[i]), 0.0) for i in (0, 2)]
    np.testing.assert_allclose(values[[0, 2]], naive, rtol=1e-5)
    assert np.isnan(values[[1, 3]]).all()
