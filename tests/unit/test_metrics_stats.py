"""Bootstrap over seeds: coverage, agreement with a naive loop, and verdicts by the CI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluator.scoring.stats import (
    BootstrapConfig,
    bootstrap_mean_ci,
    grouped_bootstrap,
    percentile_ci,
    seed_matrix,
    verdict,
)


def test_ci_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    true_mean = 2.0
    values = rng.normal(true_mean, 1.0, size=(2000, 20))
    mean, n, lo, hi = bootstrap_mean_ci(values, BootstrapConfig(n_boot=1000, seed=1))
    covered = ((lo <= true_mean) & (true_mean <= hi)).mean()
    # percentile bootstrap with 20 seeds: slightly under 95%, never far
    assert 0.90 <= covered <= 0.975
    assert (n == 20).all()
    np.testing.assert_allclose(mean, values.mean(axis=1))
    assert ((lo <= mean) & (mean <= hi)).all()


def test_bootstrap_matches_a_naive_per_group_loop():
    rng = np.random.default_rng(1)
    values = rng.exponential(1.0, size=(30, 8))
    values[::3, 5:] = np.nan  # groups with fewer seeds
    _, n, lo, hi = bootstrap_mean_ci(values, BootstrapConfig(n_boot=20000, seed=2))
    naive_rng = np.random.default_rng(3)
    for g in range(30):
        row = values[g][~np.isnan(values[g])]
        assert n[g] == len(row)
        boots = [row[naive_rng.integers(0, len(row), size=len(row))].mean() for _ in range(20000)]
        nlo, nhi = np.percentile(boots, [2.5, 97.5])
        spread = row.std() / np.sqrt(len(row))
        assert lo[g] == pytest.approx(nlo, abs=0.25 * spread)
        assert hi[g] == pytest.approx(nhi, abs=0.25 * spread)


def test_bootstrap_is_reproducible_and_single_seed_has_no_interval():
    values = np.array([[1.0, 2.0, 4.0], [3.0, np.nan, np.nan]])
    a = bootstrap_mean_ci(values, BootstrapConfig(seed=5))
    b = bootstrap_mean_ci(values, BootstrapConfig(seed=5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    mean, n, lo, hi = a
    assert mean[1] == 3.0 and n[1] == 1 and np.isnan(lo[1]) and np.isnan(hi[1])
    with pytest.raises(ValueError, match="2-D"):
        bootstrap_mean_ci(np.zeros(3))
    with pytest.raises(ValueError, match="alpha must be in"):
        percentile_ci(np.zeros((1, 3)), alpha=1.5)


def test_seed_matrix_averages_templates_within_a_seed():
    frame = pd.DataFrame({
        "checkpoint": ["a"] * 6 + ["b"] * 2,
        "artist_id": ["x"] * 8,
        "seed": [0, 0, 1, 1, 2, 2, 0, 0],
        "value": [1.0, 3.0, 5.0, 7.0, 9.0, np.nan, 2.0, 4.0],
    })
    groups, matrix, n_images = seed_matrix(frame, ["checkpoint", "artist_id"])
    assert groups.to_dict("records") == [{"checkpoint": "a", "artist_id": "x"}, {"checkpoint": "b", "artist_id": "x"}]
    np.testing.assert_array_equal(matrix[0], [2.0, 6.0, 9.0])
    assert matrix[1, 0] == 3.0 and np.isnan(matrix[1, 1:]).all()
    assert n_images.tolist() == [5, 2]
    out = grouped_bootstrap(frame, ["checkpoint", "artist_id"])
    assert out["value"].tolist() == pytest.approx([17 / 3, 3.0])
    assert out["n_seeds"].tolist() == [3, 1]


def test_verdict_is_decided_by_the_ci_not_the_point_value():
    rng = np.random.default_rng(4)
    # a positive point delta with huge seed noise: the CI straddles 0 -> kept
    noisy = np.array([[0.3, -2.0, 2.7, -0.6]])
    mean, _, lo, hi = bootstrap_mean_ci(noisy)
    assert mean[0] > 0 and lo[0] < 0 < hi[0]
    assert verdict(lo[0], hi[0], higher_is_better=True) == "kept"
    # a small but consistent gain: the CI excludes 0 -> gained
    steady = 0.05 + rng.normal(0, 0.005, size=(1, 8))
    _, _, lo, hi = bootstrap_mean_ci(steady)
    assert verdict(lo[0], hi[0], True) == "gained"
    assert verdict(lo[0], hi[0], False) == "lost"  # e.g. artist_rank going up is a loss
    assert verdict(-0.3, -0.1, True) == "lost"
    # no interval is no decision (issue 11): undecided, never a silent "kept"
    assert verdict(float("nan"), float("nan"), True) == "undecided"
    assert verdict(None, None, False) == "undecided"


def test_intervals_do_not_depend_on_the_order_rows_arrive_in():
    """A rescore reads stored rows in another order than the first run computed them: the
    units must be numbered alike, or the same seeds get other resampling weights and the
    interval moves (it did: clip_score's upper bound went from 1.77 to 1.36 on a rescore)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"checkpoint": "a", "artist_id": np.repeat(["x", "y"], 12),
                          "seed": np.tile(np.repeat([0, 1, 2, 3, 4, 5], 2), 2).astype(float),
                          "image_id": np.arange(24), "value": rng.normal(0, 1, 24)})
    frame.loc[[3, 15], "seed"] = np.nan  # images without a seed are units of their own
    out = grouped_bootstrap(frame, ["checkpoint", "artist_id"], image_col="image_id")
    for shuffle_seed in range(3):
        shuffled = frame.sample(frac=1.0, random_state=shuffle_seed)
        again = grouped_bootstrap(shuffled, ["checkpoint", "artist_id"], image_col="image_id")
        pd.testing.assert_frame_equal(again, out)
