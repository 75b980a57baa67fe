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
5. comparisons base vs fine-tune: paired bootstrap over shared seeds, on the metrics
   the registry marks ``per_seed``.

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

ARTIST_SCORE_COLUMNS = ["checkpoint", "artist_id", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]
CHECKPOINT_SCORE_COLUMNS = ["checkpoint", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]
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
        cache={},
    )


def _image_level(batch: ScoringBatch, tables: ScoreTables) -> pd.DataFrame:
    """Image scores of the new images; returns every image's (old and new) scores with meta."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics

    sub = _new_images(batch.inputs, batch.new_mask)
    metrics = list_metrics("image", has_references=sub.has_references())
    new_long = _image_long({m.name: np.asarray(m.fn(sub), dtype=np.float64) for m in metrics}, sub.image_ids)
    new_long["model"] = batch.model
    tables.image_scores = new_long[["image_id", "model", "metric", "value"]]
    old = batch.old_scores
    current = set(batch.inputs.image_ids.tolist())
    old = old[old["image_id"].isin(current) & ~old["image_id"].isin(set(sub.image_ids.tolist()))]
    long = pd.concat([old[["image_id", "metric", "value"]], new_long[["image_id", "metric", "value"]]], ignore_index=True)
    long = long.merge(batch.meta, on="image_id", how="inner")
    long["value"] = long["value"].astype("float64")  # an empty store frame is object-typed
    return long


def _with_ci_columns(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """A metric's rows named ``name``, with NaN for the CI columns it does not give."""
    import numpy as np

    frame = frame.copy()
    for col in ("n_seeds", "ci_low", "ci_high"):
        if col not in frame:
            frame[col] = np.nan
    frame["metric"] = name
    return frame


def _artist_level(batch: ScoringBatch, long: pd.DataFrame, tables: ScoreTables) -> None:
    """Image metrics per (checkpoint, artist) over seeds, plus the registry's artist metrics."""
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics
    from evaluator.scoring.stats import grouped_bootstrap

    parts = [grouped_bootstrap(long, ["checkpoint", "artist_id", "metric"], config=batch.bootstrap)]
    for m in list_metrics("artist", has_references=batch.inputs.has_references()):
        frame = m.fn(batch.inputs)
        if frame is None or frame.empty:
            continue
        frame = _with_ci_columns(frame, m.name)
        tables.artist_metrics[m.name] = frame
        parts.append(frame[["checkpoint", "artist_id", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]])
    artist_scores = pd.concat(parts, ignore_index=True)
    artist_scores["model"] = batch.model
    tables.artist_scores = artist_scores[ARTIST_SCORE_COLUMNS]


def _bootstrap_over_rows(frame: pd.DataFrame, group_col: str, value_col: str, cfg: BootstrapConfig) -> pd.DataFrame:
    """Mean with a bootstrap CI over the rows of each group (artists of a checkpoint)."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.stats import bootstrap_mean_ci

    data = frame[frame[value_col].notna()]
    if data.empty:
        return data.iloc[0:0][[group_col]].assign(value=[], n=[], ci_low=[], ci_high=[])
    keys = sorted(data[group_col].unique())
    sizes = data.groupby(group_col)[value_col].size()
    matrix = np.full((len(keys), int(sizes.max())), np.nan)
    for i, key in enumerate(keys):
        vals = data.loc[data[group_col] == key, value_col].to_numpy(dtype=np.float64)
        matrix[i, : len(vals)] = vals
    mean, n, lo, hi = bootstrap_mean_ci(matrix, cfg)
    return pd.DataFrame({group_col: keys, "value": mean, "n": n, "ci_low": lo, "ci_high": hi})


def _checkpoint_level(batch: ScoringBatch, long: pd.DataFrame, tables: ScoreTables) -> None:
    """The leaderboard: image metrics over artist images, artist metrics over artists,
    and the registry's checkpoint metrics."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.metrics import list_metrics
    from evaluator.scoring.stats import grouped_bootstrap

    not_base = long[long["artist_id"] != batch.inputs.baseline_artist]
    parts = [grouped_bootstrap(not_base, ["checkpoint", "metric"], config=batch.bootstrap)]
    for name, frame in tables.artist_metrics.items():
        agg = _bootstrap_over_rows(frame, "checkpoint", "value", batch.bootstrap)
        agg["metric"] = name
        agg["n_seeds"] = np.nan
        parts.append(agg)
    for m in list_metrics("checkpoint", has_references=batch.inputs.has_references()):
        frame = m.fn(batch.inputs)
        if frame is None or frame.empty:
            continue
        parts.append(_with_ci_columns(frame, m.name))
    ck = pd.concat([p[["checkpoint", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]] for p in parts], ignore_index=True)
    ck["model"] = batch.model
    tables.checkpoint_scores = ck[CHECKPOINT_SCORE_COLUMNS]


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
    """(checkpoint, artist_id, metric, seed, value) of every metric the registry marks
    ``per_seed``: image metrics as the mean of the seed's images, artist metrics from
    their ``seed_values``."""
    import pandas as pd

    from evaluator.scoring.metrics import seed_metrics

    image_names = [m.name for m in seed_metrics("image")]
    images = long[long["metric"].isin(image_names)]
    parts = [images.groupby(["checkpoint", "artist_id", "metric", "seed"], sort=True)["value"].mean().reset_index()]
    for m in seed_metrics("artist"):
        if m.needs_references and not inputs.has_references():
            continue
        values = m.seed_values(inputs)
        if not values.empty:
            parts.append(values.assign(metric=m.name))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _compare_pair(per_seed: pd.DataFrame, base: str, ft: str, model: str, boot: BootstrapConfig) -> pd.DataFrame | None:
    """One (base, finetune) pair's comparison rows; None when they share no seed."""
    import pandas as pd

    from evaluator.scoring.metrics import get_metric
    from evaluator.scoring.stats import grouped_bootstrap, verdict

    b = per_seed[per_seed["checkpoint"] == base].drop(columns="checkpoint")
    f = per_seed[per_seed["checkpoint"] == ft].drop(columns="checkpoint")
    paired = b.merge(f, on=["artist_id", "metric", "seed"], suffixes=("_base", "_ft"))
    if paired.empty:
        return None
    paired["delta"] = paired["value_ft"] - paired["value_base"]
    res = grouped_bootstrap(paired, ["artist_id", "metric"], value_col="delta", config=boot)
    means = paired.groupby(["artist_id", "metric"], sort=True)[["value_base", "value_ft"]].mean().reset_index()
    res = res.merge(means, on=["artist_id", "metric"])
    res["higher_is_better"] = [get_metric(m).higher_is_better for m in res["metric"]]
    res["verdict"] = [verdict(lo, hi, h) for lo, hi, h in zip(res["ci_low"], res["ci_high"], res["higher_is_better"], strict=True)]
    return pd.DataFrame({
        "base": base,
        "finetune": ft,
        "artist_id": res["artist_id"],
        "model": model,
        "metric": res["metric"],
        "base_value": res["value_base"],
        "finetune_value": res["value_ft"],
        "delta": res["value"],
        "ci_low": res["ci_low"],
        "ci_high": res["ci_high"],
        "n": res["n_seeds"],
        "verdict": res["verdict"],
        "higher_is_better": res["higher_is_better"],
    })


def comparisons(batch: ScoringBatch, long: pd.DataFrame) -> pd.DataFrame:
    """Fine-tune vs base on every per-seed metric: paired bootstrap over shared seeds."""
    import pandas as pd

    per_seed = per_seed_values(batch.inputs, long)
    parts = [_compare_pair(per_seed, base, ft, batch.model, batch.bootstrap) for base, ft in batch.pairs]
    parts = [p for p in parts if p is not None]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


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
