"""Every score table's rows for one model, from the metric registry (pure: no I/O).

Reads an :class:`evaluator.scoring.metrics.EvalInputs` and the image scores already in
the store; writes nothing (``evaluator.scoring.write`` stores the :class:`ScoreTables`).

1. image level: the registry's image metrics on the images not scored yet; earlier
   values come from the store;
2. artist level: image metrics as the mean of per-seed means with a bootstrap CI over
   seeds, plus the artist metrics;
3. checkpoint level (the leaderboard): image metrics over all artist images, artist
   metrics averaged over artists (CI over artists), plus the checkpoint metrics;
4. artist neighbours per checkpoint (cosine of image centroids);
5. comparisons base vs fine-tune on the metrics the registry marks ``per_seed``: paired
   bootstrap over shared seeds; else two-sample over each side's seeds, or images where
   no seed is known (``ci_over``); no interval -> ``undecided`` with ``verdict_reason``.

Images without a known seed (imported sets) are bootstrapped over images, never
pooled into one "seed" that gives no interval; ``score_warnings`` lists what is NULL
or undecided and why.

Metrics that need reference images are skipped when there are none.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evaluator.scoring.metrics import EvalInputs
    from evaluator.scoring.stats import BootstrapConfig

# `n` is kept as it was (images in artist_scores, shared seeds in comparisons, images or
# artists in checkpoint_scores) for readers of older stores; n_images, n_seeds and
# n_artists (migration 6) say what is counted. n_classes: an identification metric's N.
ARTIST_SCORE_COLUMNS = ["checkpoint", "artist_id", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high",
                        "ci_over", "reason", "n_images", "n_classes"]
CHECKPOINT_SCORE_COLUMNS = ["checkpoint", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high",
                            "ci_over", "reason", "n_pos", "n_neg", "n_images", "n_artists", "n_classes"]
COMPARISON_COLUMNS = ["base", "finetune", "artist_id", "model", "metric", "base_value", "finetune_value", "delta",
                      "ci_low", "ci_high", "n", "verdict", "higher_is_better", "ci_over", "paired", "n_base",
                      "n_finetune", "verdict_reason", "n_seeds"]
# The optional columns of a metric's rows, and what they are when it does not give them.
OPTIONAL_COLUMNS = {"n_seeds": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "ci_over": None,
                    "reason": None, "n_pos": float("nan"), "n_neg": float("nan"), "n_images": float("nan"),
                    "n_artists": float("nan"), "n_classes": float("nan")}
NEIGHBOR_COLUMNS = ["checkpoint", "model", "artist_id", "rank", "neighbor_id", "similarity"]


@dataclass
class ScoringBatch:
    """What the aggregation works on for one model."""

    inputs: EvalInputs  # every scored image of the model, sorted by image id
    meta: pd.DataFrame  # row-aligned with inputs: image_id, checkpoint, artist_id, template, seed
    new_mask: np.ndarray  # bool [N]: images without stored image scores
    old_scores: pd.DataFrame  # image_id, metric, value already stored (same scoring context)
    model: str
    pairs: list[tuple[str, str]]  # (base, finetune) to compare
    bootstrap: BootstrapConfig
    k_neighbors: int
    # image_id, model, metric, value of the new images, when computed elsewhere (the
    # ranks of a launch, evaluator.scoring.parts); None: computed here from new_mask
    new_scores: pd.DataFrame | None = None
    # metric -> the smallest change that counts as gained/lost (metrics.resolve_min_effects);
    # a metric not named falls back to its registry default
    min_effect: dict[str, float] = field(default_factory=dict)


@dataclass
class ScoreTables:
    """The rows of each score table (None: nothing to write to it)."""

    image_scores: pd.DataFrame | None = None
    artist_scores: pd.DataFrame | None = None
    checkpoint_scores: pd.DataFrame | None = None
    artist_neighbors: pd.DataFrame | None = None
    comparisons: pd.DataFrame | None = None
    # artist metric name -> its (checkpoint, artist_id, value, n, ...) rows, for step 3
    artist_metrics: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    # what the numbers cannot say (undecided verdicts, NULL metrics and why): filled by
    # `run` from evaluator.scoring.notices, which `score` prints
    warnings: list[str] = field(default_factory=list)

    def get(self, table: str) -> pd.DataFrame | None:
        return getattr(self, table) if table in {f.name for f in fields(self)} else None


def scored_meta(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns aggregation groups by, row-aligned with the metric inputs."""
    meta = rows[["image_id", "checkpoint", "artist_id", "template", "seed"]].copy()
    meta["seed"] = meta["seed"].fillna(-1).astype("int64")
    return meta


def compute_scores(batch: ScoringBatch) -> ScoreTables:
    """Every score table's rows for one model; see the module docstring for the steps."""
    tables = ScoreTables()
    batch.inputs.bootstrap = batch.bootstrap
    batch.inputs.model = batch.model  # metrics whose meaning depends on the embedding model (aesthetic)
    long = _image_level(batch, tables)  # 1.
    _artist_level(batch, long, tables)  # 2.
    _checkpoint_level(batch, long, tables)  # 3.
    tables.artist_neighbors = artist_neighbors(batch.inputs, batch.model, batch.k_neighbors)  # 4.
    tables.comparisons = comparisons(batch, long)  # 5.
    return tables


def _image_long(values: dict[str, np.ndarray], ids: np.ndarray) -> pd.DataFrame:
    """(image_id, metric, value) rows of each metric's values; NaN means no value."""
    import numpy as np
    import pandas as pd

    parts = []
    for name, vals in values.items():
        keep = ~np.isnan(vals)
        parts.append(pd.DataFrame({"image_id": ids[keep], "metric": name, "value": vals[keep]}))
    if not parts:
        return pd.DataFrame(columns=["image_id", "metric", "value"])
    return pd.concat(parts, ignore_index=True)


def _new_images(inputs: EvalInputs, new_mask: np.ndarray) -> EvalInputs:
    """The metric inputs restricted to the images not scored yet (shared catalog and references)."""
    from dataclasses import replace

    import numpy as np

    idx = np.flatnonzero(new_mask)
    return replace(
        inputs,
        image_ids=inputs.image_ids[idx],
        vecs=inputs.vecs[idx],
        checkpoint=inputs.checkpoint[idx],
        artist_id=inputs.artist_id[idx],
        template=inputs.template[idx],
        seed=inputs.seed[idx],
        prompt_vecs=None if inputs.prompt_vecs is None else inputs.prompt_vecs[idx],
        has_prompt=None if inputs.has_prompt is None else inputs.has_prompt[idx],
        cache={},
    )


def image_metric_rows(inputs: EvalInputs, mask: np.ndarray, model: str) -> pd.DataFrame:
    """(image_id, model, metric, value) of every image metric on the images ``mask`` selects.

    An image's values depend on it, the catalog, the references and the CSLS pool only,
    never on which other images are selected: the ranks of a launch each take a share.
    Rows come in the registry's metric order, images in ``inputs`` order (by image id).
    """
    import numpy as np
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics

    if not mask.any():
        return pd.DataFrame({"image_id": pd.Series(dtype="int64"), "model": pd.Series(dtype=object),
                             "metric": pd.Series(dtype=object), "value": pd.Series(dtype="float64")})
    sub = _new_images(inputs, mask)
    metrics = list_metrics("image", has_references=sub.has_references())
    new_long = _image_long({m.name: np.asarray(m.fn(sub), dtype=np.float64) for m in metrics}, sub.image_ids)
    new_long["model"] = model
    return new_long[["image_id", "model", "metric", "value"]]


def _image_level(batch: ScoringBatch, tables: ScoreTables) -> pd.DataFrame:
    """Image scores of the new images; returns every image's (old and new) scores with meta."""
    import pandas as pd

    new_long = batch.new_scores
    if new_long is None:
        new_long = image_metric_rows(batch.inputs, batch.new_mask, batch.model)
    tables.image_scores = new_long
    old = batch.old_scores
    current = set(batch.inputs.image_ids.tolist())
    old = old[old["image_id"].isin(current) & ~old["image_id"].isin(set(batch.inputs.image_ids[batch.new_mask].tolist()))]
    long = pd.concat([old[["image_id", "metric", "value"]], new_long[["image_id", "metric", "value"]]], ignore_index=True)
    long = long.merge(batch.meta, on="image_id", how="inner")
    long["value"] = long["value"].astype("float64")  # an empty store frame is object-typed
    return long


def _with_ci_columns(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """A metric's rows named ``name``, with NaN/None for the optional columns it does not give."""
    frame = _fill_optional(frame)
    frame["metric"] = name
    return frame


def _fill_optional(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with NaN/None in each optional column it lacks."""
    frame = frame.copy()
    for col, missing in OPTIONAL_COLUMNS.items():
        if col not in frame:
            frame[col] = missing
    return frame


def _artist_level(batch: ScoringBatch, long: pd.DataFrame, tables: ScoreTables) -> None:
    """Image metrics per (checkpoint, artist) over seeds, plus the registry's artist metrics."""
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics
    from evaluator.scoring.stats import grouped_bootstrap

    parts = [grouped_bootstrap(long, ["checkpoint", "artist_id", "metric"], config=batch.bootstrap, image_col="image_id")]
    for m in list_metrics("artist", has_references=batch.inputs.has_references()):
        frame = m.fn(batch.inputs)
        if frame is None or frame.empty:
            continue
        frame = _with_ci_columns(frame, m.name)
        tables.artist_metrics[m.name] = frame
        parts.append(frame[[c for c in ARTIST_SCORE_COLUMNS if c != "model"]])
    artist_scores = _fill_optional(pd.concat(parts, ignore_index=True))
    artist_scores["model"] = batch.model
    artist_scores["n_images"] = artist_scores["n"]  # every artist_scores `n` counts images
    tables.artist_scores = _with_class_counts(artist_scores, batch.inputs)[ARTIST_SCORE_COLUMNS]


def _with_class_counts(frame: pd.DataFrame, inputs: EvalInputs) -> pd.DataFrame:
    """``n_classes`` of each identification metric's rows (N: chance is 1/N)."""
    from evaluator.scoring.metrics import list_metrics

    counts = {m.name: m.n_classes(inputs) for m in list_metrics() if m.n_classes is not None}
    per_image = {name: n for name, n in counts.items() if hasattr(n, "__len__")}
    scalar = {name: n for name, n in counts.items() if name not in per_image}
    frame["n_classes"] = frame["metric"].map(scalar).astype("float64")
    for name, n in per_image.items():
        frame = _per_image_class_counts(frame, inputs, name, n)
    return frame


def _per_image_class_counts(frame: pd.DataFrame, inputs: EvalInputs, metric: str, n: np.ndarray) -> pd.DataFrame:
    """``n_classes`` of ``metric``'s rows from each image's own N (catalog kinds, issue 15):
    a row's N when all its images share one, NULL when they mix class sets."""
    import numpy as np
    import pandas as pd

    keys = ["checkpoint", "artist_id"] if "artist_id" in frame else ["checkpoint"]
    images = pd.DataFrame({"checkpoint": inputs.checkpoint, "artist_id": inputs.artist_id, "n": n}).dropna()
    grouped = images.groupby(keys, sort=False)["n"].agg(["min", "max"]).reset_index()
    grouped["value"] = np.where(grouped["min"] == grouped["max"], grouped["min"], np.nan)
    rows = frame["metric"] == metric
    if rows.any():
        merged = frame.loc[rows, keys].merge(grouped[[*keys, "value"]], on=keys, how="left")
        frame.loc[rows, "n_classes"] = merged["value"].to_numpy(dtype="float64")
    return frame


def _bootstrap_over_rows(frame: pd.DataFrame, group_col: str, value_col: str, cfg: BootstrapConfig) -> pd.DataFrame:
    """Mean with a bootstrap CI over the rows of each group (artists of a checkpoint)."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.stats import bootstrap_mean_ci

    data = frame[frame[value_col].notna()]
    keys = sorted(data[group_col].unique())
    matrix = np.full((len(keys), max([int((data[group_col] == k).sum()) for k in keys], default=1)), np.nan)
    for i, key in enumerate(keys):
        vals = data.loc[data[group_col] == key, value_col].to_numpy(dtype=np.float64)
        matrix[i, : len(vals)] = vals
    mean, n, lo, hi = bootstrap_mean_ci(matrix, cfg)
    out = pd.DataFrame({group_col: keys, "value": mean, "n": n, "ci_low": lo, "ci_high": hi,
                        "ci_over": "artists", "reason": None})
    # a group whose every row is NULL (e.g. `recognized` undecided for every artist)
    # still gets its NULL row, with the artists' reason
    empty = sorted(set(frame[group_col].unique()) - set(keys))
    if not empty:
        return out
    reasons = frame["reason"] if "reason" in frame else pd.Series(None, index=frame.index, dtype=object)
    why = {k: r.dropna().iloc[0] if r.notna().any() else "every value is NULL" for k, r in reasons.groupby(frame[group_col])}
    nulls = pd.DataFrame({group_col: empty, "value": np.nan, "n": 0, "ci_low": np.nan, "ci_high": np.nan,
                          "ci_over": None, "reason": [f"no artist has a value ({why[k]})" for k in empty]})
    return pd.concat([out, nulls], ignore_index=True) if len(out) else nulls


def _checkpoint_level(batch: ScoringBatch, long: pd.DataFrame, tables: ScoreTables) -> None:
    """The leaderboard: image metrics over artist images, artist metrics over artists,
    and the registry's checkpoint metrics."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics
    from evaluator.scoring.stats import grouped_bootstrap

    not_base = long[long["artist_id"] != batch.inputs.baseline_artist]
    images = grouped_bootstrap(not_base, ["checkpoint", "metric"], config=batch.bootstrap, image_col="image_id")
    parts = [images.assign(n_images=images["n"])]
    for name, frame in tables.artist_metrics.items():
        agg = _bootstrap_over_rows(frame, "checkpoint", "value", batch.bootstrap)
        agg["metric"] = name
        agg["n_seeds"] = np.nan
        agg["n_artists"] = agg["n"]
        parts.append(agg)
    for m in list_metrics("checkpoint", has_references=batch.inputs.has_references()):
        frame = m.fn(batch.inputs)
        if frame is None or frame.empty:
            continue
        parts.append(_with_ci_columns(frame, m.name))
    cols = [c for c in CHECKPOINT_SCORE_COLUMNS if c != "model"]
    ck = pd.concat([_fill_optional(p)[cols] for p in parts], ignore_index=True)
    ck["model"] = batch.model
    tables.checkpoint_scores = _with_class_counts(ck, batch.inputs)[CHECKPOINT_SCORE_COLUMNS]


def artist_neighbors(inputs: EvalInputs, model: str, k: int) -> pd.DataFrame:
    """Top-``k`` artists of each artist by cosine of image centroids, per checkpoint."""
    import numpy as np
    import pandas as pd

    from evaluator.embedding.index import build_centroid_index

    parts = []
    is_artist = inputs.artist_id != inputs.baseline_artist
    for ckpt in sorted(set(inputs.checkpoint.tolist())):
        rows = (inputs.checkpoint == ckpt) & is_artist
        if rows.sum() == 0:
            continue
        cidx = build_centroid_index(ckpt, inputs.artist_id[rows], inputs.vecs[rows])
        if len(cidx.artist_ids) < 2:
            continue
        sims, pos = cidx.neighbors(k)
        names = np.asarray(cidx.artist_ids, dtype=object)
        a_idx, r_idx = np.nonzero(pos >= 0)
        parts.append(pd.DataFrame({
            "checkpoint": ckpt,
            "model": model,
            "artist_id": names[a_idx],
            "rank": r_idx + 1,
            "neighbor_id": names[pos[a_idx, r_idx]],
            "similarity": sims[a_idx, r_idx].astype(np.float64),
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=NEIGHBOR_COLUMNS)


def per_seed_values(inputs: EvalInputs, long: pd.DataFrame) -> pd.DataFrame:
    """(checkpoint, artist_id, metric, _unit, _known, value) of every metric the registry
    marks ``per_seed``: the mean of each unit's images, a unit being a known seed or,
    for an image without one, the image itself (see ``stats.with_units``). Artist
    metrics give their ``image_values`` (else their known-seed ``seed_values``)."""
    import pandas as pd

    from evaluator.scoring.metrics import seed_metrics
    from evaluator.scoring.stats import UNKNOWN_SEED, with_units

    cols = ["checkpoint", "artist_id", "metric", "image_id", "seed", "value"]
    image_names = [m.name for m in seed_metrics("image")]
    parts = [long.loc[long["metric"].isin(image_names), cols]]
    for m in seed_metrics("artist"):
        if m.needs_references and not inputs.has_references():
            continue
        if m.image_values is not None:
            values = m.image_values(inputs).assign(metric=m.name)
        else:  # one value per seed: only known seeds are units
            values = m.seed_values(inputs).assign(metric=m.name, image_id=0)
            values = values[values["seed"] != UNKNOWN_SEED]
        if not values.empty:
            parts.append(values[cols])
    rows = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
    rows = with_units(rows[rows["value"].notna()])
    keys = ["checkpoint", "artist_id", "metric", "_unit", "_known"]
    return rows.groupby(keys, sort=True, observed=True)["value"].mean().reset_index()


def _paired_rows(b: pd.DataFrame, f: pd.DataFrame, boot: BootstrapConfig) -> pd.DataFrame:
    """Groups sharing at least 2 known seeds: paired bootstrap of the per-seed deltas."""
    from evaluator.scoring.stats import CI_OVER_SEEDS, grouped_bootstrap

    keys = ["artist_id", "metric"]
    paired = b[b["_known"]].merge(f[f["_known"]], on=[*keys, "_unit"], suffixes=("_base", "_ft"))
    shared = paired.groupby(keys)["_unit"].transform("size")
    paired = paired[shared >= 2].assign(delta=lambda x: x["value_ft"] - x["value_base"])
    res = grouped_bootstrap(paired, keys, value_col="delta", seed_col="_unit", config=boot)
    means = paired.groupby(keys, sort=True)[["value_base", "value_ft"]].mean().reset_index()
    res = res.merge(means, on=keys)
    res = res.assign(n_base=res["n_seeds"], n_finetune=res["n_seeds"], n_shared=res["n_seeds"], paired=True,
                     ci_over=CI_OVER_SEEDS)
    return res.drop(columns=["n", "n_seeds"])


def _unpaired_rows(b: pd.DataFrame, f: pd.DataFrame, groups: pd.DataFrame, boot: BootstrapConfig) -> pd.DataFrame:
    """Groups sharing fewer than 2 seeds: two-sample bootstrap over each side's units
    (seeds, or images without seeds); fewer than 2 units on a side -> no CI."""
    import numpy as np

    from evaluator.scoring.stats import CI_OVER_IMAGES, CI_OVER_MIXED, CI_OVER_SEEDS, two_sample_ci

    keys = ["artist_id", "metric"]
    if groups.empty:
        return groups.assign(value=[], ci_low=[], ci_high=[], value_base=[], value_ft=[], n_base=[], n_finetune=[],
                             paired=[], ci_over=[])
    sides = {}
    for name, side in (("base", b), ("ft", f)):
        side = side.merge(groups[keys], on=keys)
        agg = side.groupby(keys, sort=True).agg(values=("value", list), known=("_known", "all"), some=("_known", "any"))
        sides[name] = agg.reindex(groups.set_index(keys).index)
    base_vals = [np.asarray(v, dtype=np.float64) for v in sides["base"]["values"]]
    ft_vals = [np.asarray(v, dtype=np.float64) for v in sides["ft"]["values"]]
    delta, lo, hi = two_sample_ci(base_vals, ft_vals, boot)
    every = (sides["base"]["known"] & sides["ft"]["known"]).to_numpy(dtype=bool)
    none = ~(sides["base"]["some"] | sides["ft"]["some"]).to_numpy(dtype=bool)
    return groups.assign(
        value=delta, ci_low=lo, ci_high=hi,
        value_base=[v.mean() for v in base_vals], value_ft=[v.mean() for v in ft_vals],
        n_base=[len(v) for v in base_vals], n_finetune=[len(v) for v in ft_vals], paired=False,
        ci_over=np.select([every, none], [CI_OVER_SEEDS, CI_OVER_IMAGES], CI_OVER_MIXED).astype(object),
    )


def _verdicts(res: pd.DataFrame, min_effect: dict[str, float]) -> pd.DataFrame:
    """``higher_is_better``, ``verdict`` and ``verdict_reason`` of comparison rows: no CI
    is undecided (why: too few units), a real change under the metric's min_effect is kept
    (why: too small to count)."""
    from evaluator.scoring.metrics import get_metric
    from evaluator.scoring.stats import decide, min_effect_reason, missing_ci_reason

    metrics = {m: get_metric(m) for m in res["metric"].unique()}
    res["higher_is_better"] = [metrics[m].higher_is_better for m in res["metric"]]
    margins = [min_effect.get(m, metrics[m].min_effect) for m in res["metric"]]
    rows = list(zip(res["ci_low"], res["ci_high"], res["higher_is_better"], res["value"], margins, res["ci_over"],
                    strict=True))
    decided = [decide(lo, hi, h, d, m) for lo, hi, h, d, m, _ in rows]
    res["verdict"] = [v for v, _ in decided]
    res["verdict_reason"] = [
        missing_ci_reason(c) if v == "undecided" else min_effect_reason(d, m) if small else None
        for (_, _, _, d, m, c), (v, small) in zip(rows, decided, strict=True)]
    return res


def _compare_pair(units: pd.DataFrame, base: str, ft: str, model: str, boot: BootstrapConfig,
                  min_effect: dict[str, float] | None = None) -> pd.DataFrame | None:
    """One (base, finetune) pair's comparison rows, one per (artist, metric) both have;
    None when they have none in common.

    Paired bootstrap over the seeds both share when there are at least 2; otherwise a
    two-sample bootstrap over each side's units (seeds, or images without seeds); with
    fewer than 2 units the verdict is ``undecided`` and ``verdict_reason`` says why. A
    change under the metric's ``min_effect`` is ``kept`` (see :func:`_verdicts`).
    """
    import pandas as pd

    keys = ["artist_id", "metric"]
    b = units[units["checkpoint"] == base].drop(columns="checkpoint")
    f = units[units["checkpoint"] == ft].drop(columns="checkpoint")
    groups = b[keys].drop_duplicates().merge(f[keys].drop_duplicates(), on=keys)
    if groups.empty:
        return None
    paired = _paired_rows(b, f, boot)
    rest = groups.merge(paired[keys], on=keys, how="left", indicator=True)
    rest = rest.loc[rest["_merge"] == "left_only", keys]
    shared = b[b["_known"]].merge(f[f["_known"]], on=[*keys, "_unit"]).groupby(keys).size().rename("n_shared")
    unpaired = _unpaired_rows(b, f, rest, boot).merge(shared.reset_index(), on=keys, how="left")
    unpaired["n_shared"] = unpaired["n_shared"].fillna(0)
    res = pd.concat([p for p in (paired, unpaired) if len(p)], ignore_index=True).sort_values(keys, ignore_index=True)
    res = _verdicts(res, min_effect or {})
    out = res.rename(columns={"value_base": "base_value", "value_ft": "finetune_value", "value": "delta",
                              "n_shared": "n"})
    out = out.assign(base=base, finetune=ft, model=model)
    for col in ("n", "n_base", "n_finetune"):
        out[col] = out[col].astype("int64")
    out["n_seeds"] = out["n"]  # `n` of a comparison counts the seeds both sides share
    out["paired"] = out["paired"].astype(bool)
    return out[COMPARISON_COLUMNS]


def comparisons(batch: ScoringBatch, long: pd.DataFrame) -> pd.DataFrame:
    """Fine-tune vs base on every per-seed metric (see :func:`_compare_pair`)."""
    import pandas as pd

    units = per_seed_values(batch.inputs, long)
    parts = [_compare_pair(units, base, ft, batch.model, batch.bootstrap, batch.min_effect) for base, ft in batch.pairs]
    parts = [p for p in parts if p is not None]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COMPARISON_COLUMNS)


def reference_tables(refs: pd.DataFrame, vectors_of, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``reference_images`` (artist_id, image_id) and ``reference_prototypes`` (normalised
    mean embedding per artist) of the reference images; ``vectors_of(rows)`` gives their vectors."""
    import numpy as np
    import pandas as pd

    proto_rows, ref_rows = [], []
    for artist, part in refs.groupby("artist_id", sort=True):
        v = vectors_of(part).mean(axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        proto_rows.append({"artist_id": artist, "model": model, "n": len(part), "embedding": v.astype(np.float32).tolist()})
        ref_rows.extend({"artist_id": artist, "image_id": int(i)} for i in part["image_id"])
    return (
        pd.DataFrame(ref_rows, columns=["artist_id", "image_id"]),
        pd.DataFrame(proto_rows, columns=["artist_id", "model", "n", "embedding"]),
    )
