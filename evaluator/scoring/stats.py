"""Bootstrap confidence intervals over seeds, vectorised over thousands of groups.

Why seeds and not images: the images of one (checkpoint, artist) made from one seed
share a composition across templates, so they are not independent draws; the seed is
the unit of replication. Per-seed values (the mean over that seed's templates) are
resampled with replacement; a paired comparison resamples the seeds both checkpoints
share, so the composition noise cancels in the delta.

Seedless images (imported without a seed) are their own units instead: one unknown
"seed" would give no interval at all (:func:`with_units`, ``ci_over`` says which).

Vectorised: groups with the same number of seeds share one matrix of multinomial
resampling weights ``W [B, n]``, and all their bootstrap means are one matmul
``values [G, n] @ W.T / n``. Each group's interval is marginally exact; sharing the
draws across groups only correlates intervals of different groups, which no reported
number depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class BootstrapConfig:
    # 1000 resamples keep the Monte-Carlo error of a 95% percentile bound at about
    # 0.7 percentile points, small next to the seed-to-seed spread with 4 seeds.
    n_boot: int = 1000
    # Two-sided 95%: the usual reporting level; the verdict needs the CI to exclude 0.
    alpha: float = 0.05
    # A fixed seed: rerunning `atelier score` reproduces every interval exactly.
    seed: int = 0
    # Rows of values per matmul chunk: bounds memory to chunk * n_boot * 8 bytes (80 MB).
    chunk: int = 10_000


def percentile_ci(boot: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along the last axis of a ``[G, B]`` matrix of bootstrap stats."""
    import numpy as np

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) but is {alpha}")
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=-1)
    return lo, hi


def bootstrap_mean_ci(
    values: np.ndarray, config: BootstrapConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and percentile CI per row of ``values [G, S]`` (NaN = no such seed).

    Returns ``(mean, n, ci_low, ci_high)``; rows with fewer than 2 values get a NaN
    interval (one seed says nothing about seed-to-seed variation).
    """
    import numpy as np

    cfg = config or BootstrapConfig()
    if cfg.n_boot < 1:
        raise ValueError(f"n_boot must be >= 1 but is {cfg.n_boot}")
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 2:
        raise ValueError(f"values must be 2-D [groups, seeds] but has shape {vals.shape}")
    g = vals.shape[0]
    present = ~np.isnan(vals)
    n = present.sum(axis=1)
    mean = np.full(g, np.nan)
    lo = np.full(g, np.nan)
    hi = np.full(g, np.nan)
    with np.errstate(invalid="ignore"):
        nz = n > 0
        mean[nz] = np.nansum(vals[nz], axis=1) / n[nz]
    # left-pack each row's values so the first n columns are the present ones
    order = np.argsort(~present, axis=1, kind="stable")
    packed = np.take_along_axis(vals, order, axis=1)
    rng = np.random.default_rng(cfg.seed)
    for size in sorted(set(n[n >= 2].tolist())):
        rows = np.flatnonzero(n == size)
        weights = rng.multinomial(size, np.full(size, 1.0 / size), size=cfg.n_boot).astype(np.float64)
        for s in range(0, len(rows), cfg.chunk):
            chunk = rows[s : s + cfg.chunk]
            boot = packed[chunk, :size] @ weights.T / size  # [chunk, B]
            lo[chunk], hi[chunk] = percentile_ci(boot, cfg.alpha)
    return mean, n, lo, hi


def seed_matrix(
    frame: pd.DataFrame, group_cols: list[str], value_col: str = "value", seed_col: str = "seed"
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Per-seed means of ``value_col`` (mean over the rows of one seed), packed per group.

    Returns ``(groups, matrix [G, S_max], n_images [G])``: ``groups`` holds the group
    keys in row order, NaN pads groups with fewer seeds. Rows with a NaN value are dropped.
    """
    import numpy as np
    import pandas as pd

    data = frame[[*group_cols, seed_col, value_col]]
    # float64, never object: an object column sends pandas' groupby down a Python loop
    data = data.assign(**{value_col: pd.to_numeric(data[value_col], errors="raise").astype("float64")})
    data = data[data[value_col].notna()]
    if data.empty:
        return pd.DataFrame(columns=group_cols), np.zeros((0, 1)), np.zeros(0, dtype=np.int64)
    per_seed = data.groupby([*group_cols, seed_col], sort=True, observed=True)[value_col].agg(["mean", "size"])
    per_seed = per_seed.reset_index()
    gkey = per_seed.groupby(group_cols, sort=True, observed=True).ngroup().to_numpy()
    pos = per_seed.groupby(group_cols, sort=True, observed=True).cumcount().to_numpy()
    n_groups = int(gkey.max()) + 1
    matrix = np.full((n_groups, int(pos.max()) + 1), np.nan)
    matrix[gkey, pos] = per_seed["mean"].to_numpy()
    n_images = np.bincount(gkey, weights=per_seed["size"].to_numpy(), minlength=n_groups).astype(np.int64)
    groups = per_seed.drop_duplicates(group_cols)[group_cols].reset_index(drop=True)
    return groups, matrix, n_images


# A seed the image does not record (imported images without metadata or a seed label).
UNKNOWN_SEED = -1
# What a CI resamples: the seeds (the unit of replication), or, when no seed is known,
# the images themselves; ``seeds+images`` when a group mixes both.
CI_OVER_SEEDS, CI_OVER_IMAGES, CI_OVER_MIXED = "seeds", "images", "seeds+images"
# Why an interval (and so a verdict) could not be computed.
REASON_FEW_SEEDS = "n_seeds < 2"
REASON_FEW_IMAGES = "no seeds and n_images < 2"


def with_units(frame: pd.DataFrame, seed_col: str = "seed", image_col: str = "image_id") -> pd.DataFrame:
    """``frame`` plus ``_unit`` (what is resampled) and ``_known`` (the seed is known).

    A known seed is the unit of its images; an image without a seed is its own unit,
    so a set with no seeds at all is bootstrapped over images instead of giving one
    "seed" and no interval. Units are numbered in sorted order (seeds, then images by
    id), never in row order: the bootstrap resamples positions, so a rescore that reads
    the same rows in another order must number them alike to reproduce every interval.
    """
    import numpy as np
    import pandas as pd

    seeds = frame[seed_col].fillna(UNKNOWN_SEED).to_numpy(dtype=np.int64)
    known = seeds >= 0
    images = frame[image_col].to_numpy(dtype=np.int64)
    kind = (~known).astype(np.int64)
    key = np.where(known, seeds, images)
    codes, _ = pd.MultiIndex.from_arrays([kind, key]).factorize(sort=True)
    return frame.assign(_unit=np.asarray(codes, dtype=np.int64), _known=known)


def ci_over_of(known: pd.Series) -> str:
    """``seeds`` / ``images`` / ``seeds+images`` from the ``_known`` flags of a group's rows."""
    if known.all():
        return CI_OVER_SEEDS
    if not known.any():
        return CI_OVER_IMAGES
    return CI_OVER_MIXED


def missing_ci_reason(ci_over: str) -> str:
    """Why a group with this kind of unit has no interval: fewer than 2 units."""
    return REASON_FEW_IMAGES if ci_over == CI_OVER_IMAGES else REASON_FEW_SEEDS


def grouped_bootstrap(
    frame: pd.DataFrame,
    group_cols: list[str],
    value_col: str = "value",
    seed_col: str = "seed",
    config: BootstrapConfig | None = None,
    *,
    image_col: str | None = None,
) -> pd.DataFrame:
    """Group keys + ``value, n, n_seeds, ci_low, ci_high`` (bootstrap over seeds).

    With ``image_col``, images without a known seed are their own units (see
    :func:`with_units`), ``n_seeds`` counts the known seeds only, and the result also has
    ``ci_over`` and ``reason`` (why there is no interval, else None).
    """
    import numpy as np

    if image_col is None:
        groups, matrix, n_images = seed_matrix(frame, group_cols, value_col, seed_col)
        mean, n_seeds, lo, hi = bootstrap_mean_ci(matrix, config)
        out = groups.copy()
        out["value"] = mean
        out["n"] = n_images
        out["n_seeds"] = n_seeds
        out["ci_low"] = lo
        out["ci_high"] = hi
        return out
    data = with_units(frame[frame[value_col].notna()], seed_col, image_col)
    out = grouped_bootstrap(data, group_cols, value_col, "_unit", config)
    if out.empty:
        return out.assign(ci_over=[], reason=[])
    flags = data.groupby(group_cols, sort=True, observed=True)["_known"]
    known = data[data["_known"]].groupby(group_cols, sort=True, observed=True)[seed_col].nunique()
    out = out.set_index(group_cols)
    out["n_seeds"] = known.reindex(out.index).fillna(0).astype(np.int64)
    every, some = flags.all().reindex(out.index), flags.any().reindex(out.index)
    out["ci_over"] = np.select([every, ~some], [CI_OVER_SEEDS, CI_OVER_IMAGES], CI_OVER_MIXED).astype(object)
    no_ci = out["ci_low"].isna()
    out["reason"] = [missing_ci_reason(c) if m else None for c, m in zip(out["ci_over"], no_ci, strict=True)]
    return out.reset_index()


def _packed(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of different lengths, left-packed into a NaN-padded matrix, and their lengths."""
    import numpy as np

    n = np.array([len(v) for v in values], dtype=np.int64)
    matrix = np.full((len(values), max(int(n.max()) if len(n) else 0, 1)), np.nan)
    for i, v in enumerate(values):
        matrix[i, : len(v)] = v
    return matrix, n


def two_sample_ci(
    base: list[np.ndarray], other: list[np.ndarray], config: BootstrapConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delta of means (other − base) and its percentile CI, per group, for two unpaired samples.

    Each side is resampled with replacement on its own (the two-sample bootstrap): the
    comparison of a fine-tune with its base when they share no seeds, e.g. imported sets.
    Groups with fewer than 2 values on a side get a NaN interval.
    """
    import numpy as np

    cfg = config or BootstrapConfig()
    g = len(base)
    delta = np.array([np.mean(o) - np.mean(b) if len(b) and len(o) else np.nan for b, o in zip(base, other, strict=True)])
    lo, hi = np.full(g, np.nan), np.full(g, np.nan)
    if g == 0:
        return delta, lo, hi
    mb, nb = _packed(base)
    mo, no = _packed(other)
    rng = np.random.default_rng(cfg.seed)
    ok = (nb >= 2) & (no >= 2)

    def draws(sizes: np.ndarray) -> dict[int, np.ndarray]:
        return {n: rng.multinomial(n, np.full(n, 1.0 / n), size=cfg.n_boot).astype(np.float64)
                for n in sorted(set(sizes[ok].tolist()))}

    # each side its own draws: shared draws for equal sizes would pair the two samples
    w_base, w_other = draws(nb), draws(no)
    for sb, so in sorted({(int(a), int(b)) for a, b in zip(nb[ok], no[ok], strict=True)}):
        rows = np.flatnonzero(ok & (nb == sb) & (no == so))
        for s in range(0, len(rows), cfg.chunk):
            chunk = rows[s : s + cfg.chunk]
            boot = mo[chunk, :so] @ w_other[so].T / so - mb[chunk, :sb] @ w_base[sb].T / sb
            lo[chunk], hi[chunk] = percentile_ci(boot, cfg.alpha)
    return delta, lo, hi


VERDICTS = ("gained", "lost", "kept", "undecided")


def decide(ci_low: float, ci_high: float, higher_is_better: bool, delta: float | None = None,
           min_effect: float = 0.0) -> tuple[str, bool]:
    """(verdict, whether it is a real change kept only for being under ``min_effect``).

    gained / lost when the CI of the delta excludes 0 and the delta is at least
    ``min_effect`` (the smallest change that counts), kept otherwise, and undecided when
    there is no CI: no interval says nothing either way. One rule, so the verdict and
    its reason cannot drift apart.
    """
    import math

    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return "undecided", False
    direction = 1 if ci_low > 0 else -1 if ci_high < 0 else 0
    if direction == 0:
        return "kept", False
    if min_effect > 0:
        if delta is None or math.isnan(delta):
            raise ValueError("a verdict with a min_effect needs the delta")
        if direction * delta < min_effect:
            return "kept", True
    return ("gained" if (direction > 0) == higher_is_better else "lost"), False


def verdict(ci_low: float, ci_high: float, higher_is_better: bool, delta: float | None = None,
            min_effect: float = 0.0) -> str:
    """The verdict of :func:`decide` alone."""
    return decide(ci_low, ci_high, higher_is_better, delta, min_effect)[0]


def under_min_effect(ci_low: float, ci_high: float, delta: float, min_effect: float) -> bool:
    """True when the CI excludes 0 but the delta is smaller than ``min_effect``: a real
    but negligible change, kept (its ``verdict_reason`` says so)."""
    import math

    if delta is None or math.isnan(delta):
        return False
    return decide(ci_low, ci_high, True, delta, min_effect)[1]


def min_effect_reason(delta: float, min_effect: float) -> str:
    """Why a change the CI calls real is still kept."""
    return f"|delta| {abs(delta):.3g} < min_effect {min_effect:g}"
