"""The smallest change that counts: a real but negligible change is kept, and says so."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from evaluator.errors import InputError
from evaluator.scoring.aggregate import _compare_pair
from evaluator.scoring.metrics import default_min_effects, get_metric, resolve_min_effects
from evaluator.scoring.stats import BootstrapConfig, under_min_effect, verdict


def naive_verdict(lo: float, hi: float, higher: bool, delta: float, margin: float) -> str:
    """The rule written out case by case, as a reader of the README would apply it."""
    if math.isnan(lo) or math.isnan(hi):
        return "undecided"
    up = lo > 0 and delta >= margin
    down = hi < 0 and delta <= -margin
    if up:
        return "gained" if higher else "lost"
    if down:
        return "lost" if higher else "gained"
    return "kept"


def test_verdict_matches_the_rule_written_out_on_a_grid_of_intervals_and_margins():
    values = [-0.3, -0.01, -0.004, 0.0, 0.002, 0.006, 0.2, float("nan")]
    cases = 0
    for lo, hi in itertools.product(values, repeat=2):
        if not (math.isnan(lo) or math.isnan(hi)) and lo > hi:
            continue
        delta = (lo + hi) / 2 if not (math.isnan(lo) or math.isnan(hi)) else 0.0
        for higher, margin in itertools.product((True, False), (0.0, 0.005, 0.5)):
            assert verdict(lo, hi, higher, delta, margin) == naive_verdict(lo, hi, higher, delta, margin), (lo, hi, margin)
            cases += 1
    assert cases > 100


def test_a_significant_change_under_the_margin_is_kept_and_flagged():
    assert verdict(0.001, 0.004, True, 0.0025, 0.005) == "kept"
    assert under_min_effect(0.001, 0.004, 0.0025, 0.005)
    # the same interval with no margin is a gain; at the margin it counts
    assert verdict(0.001, 0.004, True, 0.0025, 0.0) == "gained"
    assert verdict(0.001, 0.009, True, 0.005, 0.005) == "gained"
    # an interval holding 0 is kept for its own reason, not the margin's
    assert not under_min_effect(-0.001, 0.004, 0.0015, 0.005)
    with pytest.raises(ValueError, match="needs the delta"):
        verdict(0.1, 0.2, True, None, 0.005)


def test_every_comparable_metric_has_a_margin_and_overrides_are_checked():
    defaults = default_min_effects()
    assert defaults["reference_similarity"] == 0.005 and defaults["clip_score"] == 0.5
    assert "diversity" not in defaults  # no per-seed value: never compared
    assert all(get_metric(m).per_seed for m in defaults)
    resolved = resolve_min_effects({"all": 0.0, "top1": 0.02})
    assert resolved["top1"] == 0.02 and resolved["reference_similarity"] == 0.0
    with pytest.raises(InputError, match="did you mean reference_similarity"):
        resolve_min_effects({"refrence_similarity": 0.01})
    with pytest.raises(InputError, match="no per-seed value"):
        resolve_min_effects({"diversity": 0.01})
    with pytest.raises(InputError, match="must be a finite number >= 0"):
        resolve_min_effects({"top1": float("nan")})


def _units(shift: float, noise: float, n_seeds: int = 8) -> pd.DataFrame:
    """Per-seed values of one artist on a base and a fine-tune that shifts every seed."""
    rng = np.random.default_rng(0)
    base = 0.9 + rng.normal(0, 0.02, n_seeds)
    ft = base + shift + rng.normal(0, noise, n_seeds)
    rows = [("base", s, v) for s, v in enumerate(base)] + [("ft", s, v) for s, v in enumerate(ft)]
    frame = pd.DataFrame(rows, columns=["checkpoint", "_unit", "value"])
    return frame.assign(artist_id="a", metric="reference_similarity", _known=True)


def test_a_pair_s_verdict_uses_its_metric_s_margin_and_its_reason_says_so():
    boot = BootstrapConfig(n_boot=500)
    small = _units(shift=0.002, noise=0.0005)
    row = _compare_pair(small, "base", "ft", "m", boot, {"reference_similarity": 0.005}).iloc[0]
    assert row["ci_low"] > 0 and row["verdict"] == "kept"
    assert row["verdict_reason"] == f"|delta| {abs(row['delta']):.3g} < min_effect 0.005"
    # no margin: the same rows are a gain; no entry: the registry's default (0.005) holds
    assert _compare_pair(small, "base", "ft", "m", boot, {"reference_similarity": 0.0}).iloc[0]["verdict"] == "gained"
    assert _compare_pair(small, "base", "ft", "m", boot, {}).iloc[0]["verdict"] == "kept"
    large = _compare_pair(_units(shift=0.02, noise=0.0005), "base", "ft", "m", boot, {}).iloc[0]
    assert large["verdict"] == "gained" and large["verdict_reason"] is None
