"""`atelier score`: manifests + embeddings -> every metric -> the DuckDB store.

Order of work, and why:

1. take the workdir's score lock (``DIR/.score.lock``, an OS file lock: a killed run
   releases it) so two score/embed runs on one workdir queue instead of racing;
2. read the manifests, the catalog, templates, checkpoint and run records;
3. embed images not yet embedded (resumable part files), update the FAISS index;
4. compute image scores for images not scored yet under the same scoring context
   (model, catalog, `art-by` text, references), then every aggregate from all of them;
5. open the store once and write everything in ONE transaction, then close.

A run whose inputs are unchanged (same images, catalog, references and config) writes
nothing: a rerun adds no row, not even a `runs` row. A killed run leaves the store as
it was (nothing is written before step 5) and its finished embedding parts are reused.

Tables written (``model`` is the embedding model key, e.g. ``ViT-B-32/laion2b_s34b_b79k``
or ``tiny-clip@<fp8>``; every score row is per model):

- ``images``: manifest rows (generated, imported, ``source='reference'``), upserted.
- ``image_scores (image_id, model, metric, value)``: the image-level metrics.
- ``artist_scores (checkpoint, artist_id, model, metric, value, n, n_seeds, ci_low,
  ci_high)``: image metrics as the mean of per-seed means, CI = percentile bootstrap
  over seeds; artist metrics (diversity, content_leak: no CI; recognition_margin: CI
  over seeds; recognized: 0/1). ``n`` = images (seeds for recognition_margin).
- ``checkpoint_scores``: the leaderboard: image metrics over all artist images (CI over
  seeds), artist metrics averaged over artists (CI over artists), recognized_auc_sdxl/
  sd1 and fd_clip (no CI).
- ``artist_neighbors (checkpoint, model, artist_id, rank, neighbor_id, similarity)``:
  top-k artists by cosine of image centroids; replaced per model on each write.
- ``comparisons (base, finetune, artist_id, model, metric, base_value, finetune_value,
  delta, ci_low, ci_high, n, verdict, higher_is_better)``: paired bootstrap over the
  seeds both share (``n``); verdict gained/lost only when the CI excludes 0.
- ``embedding_errors (image_id, model, error, run_id)``: images that could not be read.
- ``reference_images``, ``reference_prototypes (artist_id, model, n, embedding)``.
- ``score_state (model, fingerprint)``: what the last write was computed from.
- ``runs``: generation runs (from their records) plus one ``kind='score'`` row per
  write and a ``kind='index'`` row when the FAISS index changed (recall in ``message``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.embedding.index import IndexConfig
from evaluator.workspace.workdir import Workdir, workdir_lock

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ART_BY_FALLBACK = "artwork by {name}"
OWN_RUN_KINDS = ("score", "index")  # written to the store by score / index build themselves
CHECKPOINT_COLUMNS = ("name", "source", "kind", "base", "adapters", "fingerprint", "dtype", "scheduler", "notes")
RUN_COLUMNS = (
    "run_id", "kind", "started_at", "finished_at", "status", "config", "versions", "git_rev", "device",
    "dtype", "timings", "n_done", "n_skipped", "n_failed", "host", "message",
)


@dataclass
class ScoreConfig:
    """What to score with, and how. Defaults favour exact, reproducible numbers on a CPU."""

    # open_clip model: an architecture (+ pretrained tag or weights file), hf-hub:<id>,
    # or a local folder (evaluator.testing.tiny_clip). Required: scores are per model.
    model: str | None = None
    pretrained: str | None = None
    # CPU/float32: exact and available everywhere; pass cuda/float16 on a GPU.
    device: str = "cpu"
    dtype: str = "float32"
    # None: the catalog shipped with atelier (styles.csv, or $ATELIER_CATALOG).
    catalog_path: str | Path | None = None
    # None: atelier's templates (catalog/templates.toml); a file is merged over them.
    templates_path: str | Path | None = None
    # Bootstrap resamples over seeds (see evaluator.scoring.stats: 1000 -> ~0.7 pt MC error).
    bootstrap: int = 1000
    ci_alpha: float = 0.05  # two-sided 95% intervals
    bootstrap_seed: int = 0  # fixed: a rerun reproduces every interval
    k_neighbors: int = 10  # artist_neighbors per artist: a screenful in the dashboard
    retrieval_k: int = 10  # retrieval_map@k: the usual k of style-retrieval papers
    # recognized = the recognition margin's CI lies above this; 0 = "closer to its own
    # artist text than the no-artist baseline is", with 95% confidence.
    recognized_threshold: float = 0.0
    # Explicit (base, finetune) pairs on top of the `base` field of checkpoint records.
    base_pairs: list[tuple[str, str]] | None = None
    # Embedding: 64 images a batch fill a CPU's vector units; 2 workers = this machine.
    batch_size: int = 64
    num_workers: int = 2
    part_size: int = 4096  # images per embedding part file: what a killed run can lose
    index: IndexConfig = field(default_factory=IndexConfig)
    # How long to queue behind another score/embed run on the same workdir.
    lock_timeout: float = 3600.0
    # How long to wait for a reader (the dashboard) to release the store when writing.
    store_timeout: float = 120.0
    progress: bool = True

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model is required: an open_clip name with --pretrained, a hf-hub: id, or a local folder")
        if self.bootstrap < 1:
            raise ValueError(f"bootstrap must be >= 1 but is {self.bootstrap}")
        if not 0 < self.ci_alpha < 1:
            raise ValueError(f"ci_alpha must be in (0, 1) but is {self.ci_alpha}")
        if self.k_neighbors < 1:
            raise ValueError(f"k_neighbors must be >= 1 but is {self.k_neighbors}")
        if self.retrieval_k < 1:
            raise ValueError(f"retrieval_k must be >= 1 but is {self.retrieval_k}")
        for pair in self.base_pairs or []:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"a comparison pair must be two different checkpoints (base, finetune) but is {pair!r}")


@dataclass
class ScoreSummary:
    run_id: str | None
    model: str
    noop: bool = False
    n_images: int = 0
    n_embedded: int = 0
    n_scored: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    index: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------ workdir lock


# ------------------------------------------------------------------ inputs


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a frame's rows: vectorised row hashes (a million rows in ~1 s)."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


def _changed_rows(new: pd.DataFrame, old: pd.DataFrame | None) -> pd.DataFrame:
    """Rows of ``new`` that are not already in the store as they are (by a row hash).

    A rerun after one more shard rewrites only that shard's images, not a million rows.
    A representation difference (a column typed differently) only makes a row look
    changed, and an upsert of an unchanged row is harmless.
    """
    import pandas as pd

    from evaluator.workspace.manifest import MANIFEST_COLUMNS

    if old is None or old.empty or new.empty:
        return new
    cols = list(MANIFEST_COLUMNS)
    h_new = pd.util.hash_pandas_object(new[cols].astype(str), index=False).to_numpy()
    h_old = pd.Series(
        pd.util.hash_pandas_object(old[cols].astype(str), index=False).to_numpy(), index=old["image_id"].to_numpy()
    )
    h_old = h_old[~h_old.index.duplicated()]
    previous = h_old.reindex(new["image_id"].to_numpy()).to_numpy()
    return new[previous != h_new]


def load_catalog_frame(catalog_path: str | Path | None, images: pd.DataFrame, store_artists: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The artists table to score against, and where it came from.

    The catalog file (given, or atelier's default) when it loads; else the artists
    already in the store; else the artist ids seen in the images (names from slugs).
    """
    import pandas as pd

    from catalog.model import catalog_frame, load_catalog
    from catalog.units import BASELINE_ARTIST_ID

    if catalog_path is not None:
        return catalog_frame(load_catalog(catalog_path)), str(catalog_path)
    try:
        return catalog_frame(load_catalog(None)), "default catalog"
    except (FileNotFoundError, OSError):
        pass
    if store_artists is not None and len(store_artists):
        return store_artists, "store"
    seen = sorted(a for a in images["artist_id"].dropna().unique() if a != BASELINE_ARTIST_ID)
    frame = pd.DataFrame({"artist_id": seen, "name": [a.replace("-", " ").title() for a in seen]})
    return frame, "images"


def load_template_texts(path: str | Path | None) -> dict[str, str]:
    """Template name -> text: atelier's templates, with a user's file merged over them."""
    from catalog.templates import load_templates

    return {name: t.text for name, t in load_templates(path).items()}


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _checkpoints_frame(records: list[dict], names_seen: list[str]) -> pd.DataFrame:
    import pandas as pd

    rows = {}
    for rec in records:
        if not rec.get("name"):
            raise ValueError(f"checkpoint record without a name: {rec!r}")
        row = {c: rec.get(c) for c in CHECKPOINT_COLUMNS}
        row["adapters"] = _to_json(row["adapters"])
        rows[row["name"]] = row
    for name in names_seen:
        rows.setdefault(name, {c: None for c in CHECKPOINT_COLUMNS} | {"name": name, "notes": "seen in images; no checkpoint record"})
    return pd.DataFrame(list(rows.values()), columns=list(CHECKPOINT_COLUMNS))


def _runs_frame(records: list[dict]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for rec in records:
        if not rec.get("run_id") or not rec.get("kind"):
            raise ValueError(f"run record without run_id/kind: {rec!r}")
        row = {c: rec.get(c) for c in RUN_COLUMNS}
        for c in ("config", "versions", "timings"):
            row[c] = _to_json(row[c])
        for c in ("started_at", "finished_at"):
            if row[c] is not None:
                row[c] = pd.Timestamp(row[c]).tz_localize(None) if pd.Timestamp(row[c]).tzinfo else pd.Timestamp(row[c])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("started_at", "finished_at"):
        frame[c] = pd.to_datetime(frame[c])
    return frame


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("atelier", "torch", "open_clip_torch", "faiss-cpu", "duckdb", "numpy", "pandas", "pyarrow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def git_rev() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _read_store_state(wd: Workdir, model: str, timeout: float) -> dict:
    """Images, this model's image scores, its score state and the artists, from the store."""
    import pandas as pd

    from evaluator.workspace.store import open_store

    state: dict = {"images": None, "scores": None, "fingerprint": {}, "artists": None}
    if not wd.store.is_file():
        return state
    with open_store(wd.store, timeout=timeout) as con:  # writable: migrates an old store
        state["images"] = con.execute("SELECT * FROM images").df()
        state["scores"] = con.execute(
            "SELECT image_id, metric, value FROM image_scores WHERE model = ?", [model]
        ).df()
        row = con.execute("SELECT fingerprint FROM score_state WHERE model = ?", [model]).fetchone()
        state["fingerprint"] = json.loads(row[0]) if row and row[0] else {}
        state["artists"] = con.execute("SELECT * FROM artists").df()
    if state["scores"] is None:
        state["scores"] = pd.DataFrame(columns=["image_id", "metric", "value"])
    return state


# ------------------------------------------------------------------ aggregation


def _image_long(values: dict[str, np.ndarray], ids: np.ndarray) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    parts = []
    for name, vals in values.items():
        keep = ~np.isnan(vals)
        parts.append(pd.DataFrame({"image_id": ids[keep], "metric": name, "value": vals[keep]}))
    if not parts:
        return pd.DataFrame(columns=["image_id", "metric", "value"])
    return pd.concat(parts, ignore_index=True)


def _bootstrap_over_rows(frame: pd.DataFrame, group_col: str, value_col: str, cfg) -> pd.DataFrame:
    """Mean with a bootstrap CI over the rows of each group (artists of a checkpoint)."""
    import numpy as np

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
    import pandas as pd

    return pd.DataFrame({group_col: keys, "value": mean, "n": n, "ci_low": lo, "ci_high": hi})


def compute_scores(
    inputs_all,
    new_mask: np.ndarray,
    old_scores: pd.DataFrame,
    meta: pd.DataFrame,
    model: str,
    cfg: ScoreConfig,
    pairs: list[tuple[str, str]],
) -> dict[str, pd.DataFrame]:
    """Every table's rows for one model (pure: no I/O). ``meta`` is row-aligned with
    ``inputs_all`` and holds image_id, checkpoint, artist_id, template, seed."""
    import numpy as np
    import pandas as pd

    from evaluator.embedding.index import build_centroid_index
    from evaluator.scoring.metrics import EvalInputs, list_metrics
    from evaluator.scoring.stats import BootstrapConfig, grouped_bootstrap, verdict

    boot = BootstrapConfig(n_boot=cfg.bootstrap, alpha=cfg.ci_alpha, seed=cfg.bootstrap_seed)
    inputs_all.bootstrap = boot
    baseline = inputs_all.baseline_artist
    out: dict[str, pd.DataFrame] = {}

    # -- image level: new images only; earlier values come from the store
    idx_new = np.flatnonzero(new_mask)
    sub = EvalInputs(
        image_ids=inputs_all.image_ids[idx_new],
        vecs=inputs_all.vecs[idx_new],
        checkpoint=inputs_all.checkpoint[idx_new],
        artist_id=inputs_all.artist_id[idx_new],
        template=inputs_all.template[idx_new],
        seed=inputs_all.seed[idx_new],
        prompt_vecs=None if inputs_all.prompt_vecs is None else inputs_all.prompt_vecs[idx_new],
        catalog_ids=inputs_all.catalog_ids,
        artist_text_vecs=inputs_all.artist_text_vecs,
        ref_vecs=inputs_all.ref_vecs,
        ref_artist=inputs_all.ref_artist,
        labels=inputs_all.labels,
        baseline_artist=baseline,
        retrieval_k=inputs_all.retrieval_k,
        recognized_threshold=inputs_all.recognized_threshold,
        bootstrap=boot,
    )
    image_metrics = list_metrics("image")
    new_long = _image_long({m.name: np.asarray(m.fn(sub), dtype=np.float64) for m in image_metrics}, sub.image_ids)
    new_long["model"] = model
    out["image_scores"] = new_long[["image_id", "model", "metric", "value"]]
    current = set(inputs_all.image_ids.tolist())
    old = old_scores[old_scores["image_id"].isin(current) & ~old_scores["image_id"].isin(set(sub.image_ids.tolist()))]
    long = pd.concat([old[["image_id", "metric", "value"]], new_long[["image_id", "metric", "value"]]], ignore_index=True)
    long = long.merge(meta, on="image_id", how="inner")
    long["value"] = long["value"].astype("float64")  # an empty store frame is object-typed

    # -- artist level: image metrics aggregated over seeds, plus artist metrics
    per_artist = grouped_bootstrap(long, ["checkpoint", "artist_id", "metric"], config=boot)
    artist_parts = [per_artist]
    artist_level = {}
    for m in list_metrics("artist"):
        frame = m.fn(inputs_all)
        if frame is None or frame.empty:
            continue
        frame = frame.copy()
        for col in ("n_seeds", "ci_low", "ci_high"):
            if col not in frame:
                frame[col] = np.nan
        frame["metric"] = m.name
        artist_level[m.name] = frame
        artist_parts.append(frame[["checkpoint", "artist_id", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]])
    artist_scores = pd.concat(artist_parts, ignore_index=True)
    artist_scores["model"] = model
    out["artist_scores"] = artist_scores[["checkpoint", "artist_id", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]]

    # -- checkpoint level (the leaderboard)
    not_base = long[long["artist_id"] != baseline]
    ck_parts = [grouped_bootstrap(not_base, ["checkpoint", "metric"], config=boot)]
    for name, frame in artist_level.items():
        agg = _bootstrap_over_rows(frame, "checkpoint", "value", boot)
        agg["metric"] = name
        agg["n_seeds"] = np.nan
        ck_parts.append(agg)
    for m in list_metrics("checkpoint"):
        frame = m.fn(inputs_all)
        if frame is None or frame.empty:
            continue
        frame = frame.copy()
        frame["metric"] = m.name
        for col in ("n_seeds", "ci_low", "ci_high"):
            if col not in frame:
                frame[col] = np.nan
        ck_parts.append(frame)
    ck = pd.concat([p[["checkpoint", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]] for p in ck_parts], ignore_index=True)
    ck["model"] = model
    out["checkpoint_scores"] = ck[["checkpoint", "model", "metric", "value", "n", "n_seeds", "ci_low", "ci_high"]]

    # -- artist neighbours per checkpoint (centroid cosine)
    neigh_rows = []
    is_artist = inputs_all.artist_id != baseline
    for ckpt in sorted(set(inputs_all.checkpoint.tolist())):
        rows = (inputs_all.checkpoint == ckpt) & is_artist
        if rows.sum() == 0:
            continue
        cidx = build_centroid_index(ckpt, inputs_all.artist_id[rows], inputs_all.vecs[rows])
        if len(cidx.artist_ids) < 2:
            continue
        sims, pos = cidx.neighbors(cfg.k_neighbors)
        names = np.asarray(cidx.artist_ids, dtype=object)
        a_idx, r_idx = np.nonzero(pos >= 0)
        neigh_rows.append(pd.DataFrame({
            "checkpoint": ckpt,
            "model": model,
            "artist_id": names[a_idx],
            "rank": r_idx + 1,
            "neighbor_id": names[pos[a_idx, r_idx]],
            "similarity": sims[a_idx, r_idx].astype(np.float64),
        }))
    out["artist_neighbors"] = (
        pd.concat(neigh_rows, ignore_index=True) if neigh_rows
        else pd.DataFrame(columns=["checkpoint", "model", "artist_id", "rank", "neighbor_id", "similarity"])
    )

    # -- comparisons: fine-tune vs base, paired bootstrap over shared seeds
    from evaluator.scoring.metrics import get_metric, recognition_margins

    per_seed = long.groupby(["checkpoint", "artist_id", "metric", "seed"], sort=True)["value"].mean().reset_index()
    margins = recognition_margins(inputs_all)
    if not margins.empty:
        per_seed = pd.concat([per_seed, margins.assign(metric="recognition_margin")], ignore_index=True)
    comp_parts = []
    for base, ft in pairs:
        b = per_seed[per_seed["checkpoint"] == base].drop(columns="checkpoint")
        f = per_seed[per_seed["checkpoint"] == ft].drop(columns="checkpoint")
        paired = b.merge(f, on=["artist_id", "metric", "seed"], suffixes=("_base", "_ft"))
        if paired.empty:
            continue
        paired["delta"] = paired["value_ft"] - paired["value_base"]
        res = grouped_bootstrap(paired, ["artist_id", "metric"], value_col="delta", config=boot)
        means = paired.groupby(["artist_id", "metric"], sort=True)[["value_base", "value_ft"]].mean().reset_index()
        res = res.merge(means, on=["artist_id", "metric"])
        res["higher_is_better"] = [get_metric(m).higher_is_better for m in res["metric"]]
        res["verdict"] = [verdict(lo, hi, h) for lo, hi, h in zip(res["ci_low"], res["ci_high"], res["higher_is_better"], strict=True)]
        comp_parts.append(pd.DataFrame({
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
        }))
    out["comparisons"] = pd.concat(comp_parts, ignore_index=True) if comp_parts else pd.DataFrame()
    return out


# ------------------------------------------------------------------ the run


def resolve_pairs(records: list[dict], explicit: list[tuple[str, str]] | None, checkpoints: list[str]) -> list[tuple[str, str]]:
    """(base, finetune) pairs: each record's `base` when it names a scored checkpoint,
    plus explicit pairs (which must name scored checkpoints)."""
    import difflib

    have = set(checkpoints)
    pairs = []
    for rec in records:
        base, name = rec.get("base"), rec.get("name")
        if base and name and base in have and name in have and base != name:
            pairs.append((base, name))
    for base, ft in explicit or []:
        for n in (base, ft):
            if n not in have:
                close = difflib.get_close_matches(n, sorted(have), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; scored checkpoints: {', '.join(sorted(have)) or 'none'}"
                raise ValueError(f"--compare names checkpoint {n!r}, which has no scored images{hint}")
        pairs.append((base, ft))
    return sorted(set(pairs))


def score(workdir: str | Path, config: ScoreConfig | None = None, echo=None, **overrides: Any) -> ScoreSummary:
    """Score every image of ``workdir`` into its store; see the module docstring."""
    cfg = config or ScoreConfig()
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    cfg.validate()
    wd = Workdir.at(workdir)
    say = echo or (lambda msg: None)
    with workdir_lock(wd, cfg.lock_timeout, echo=say):
        return _score_locked(wd, cfg, say)


def _score_locked(wd: Workdir, cfg: ScoreConfig, say) -> ScoreSummary:
    import numpy as np
    import pandas as pd

    from catalog.templates import Template
    from catalog.units import BASELINE_ARTIST_ID
    from evaluator.embedding.embed import (
        embed_images,
        embed_texts,
        load_clip,
        load_embeddings,
        text_cache_dir,
    )
    from evaluator.embedding.index import update_index
    from evaluator.scoring.metrics import EvalInputs, label_to_bool
    from evaluator.workspace.manifest import MANIFEST_COLUMNS, read_manifests
    from evaluator.workspace.records import load_checkpoint_records, load_run_records

    t_start = time.perf_counter()
    started = datetime.now(UTC).replace(tzinfo=None)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        return time.perf_counter()

    t0 = time.perf_counter()
    clip = load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.dtype)
    model = clip.key
    t0 = lap("load_model", t0)

    # -- inputs
    manifest = read_manifests(wd.manifests)
    state = _read_store_state(wd, model, cfg.store_timeout)
    if state["images"] is not None and len(state["images"]):
        extra = state["images"][~state["images"]["image_id"].isin(manifest["image_id"])]
        images = pd.concat([manifest, extra[list(MANIFEST_COLUMNS)]], ignore_index=True) if len(extra) else manifest
    else:
        images = manifest
    artists, artists_from = load_catalog_frame(cfg.catalog_path, images, state["artists"])
    templates = load_template_texts(cfg.templates_path)
    ckpt_records = load_checkpoint_records(wd.root)
    # score/index runs are written to the store by score itself (their JSON is provenance)
    run_records = [r for r in load_run_records(wd.root) if r.get("kind") not in OWN_RUN_KINDS]
    t0 = lap("read_inputs", t0)

    usable = images["error"].isna() & images["path"].notna()
    refs_rows = images[usable & (images["source"] == "reference") & images["artist_id"].notna()]
    scored_rows = images[usable & (images["source"] != "reference") & images["checkpoint"].notna()]

    checkpoints_seen = sorted(scored_rows["checkpoint"].unique().tolist())
    pairs = resolve_pairs(ckpt_records, cfg.base_pairs, checkpoints_seen)  # fail early on a typo

    # -- embed what is missing, update the index
    to_embed = pd.concat([scored_rows, refs_rows], ignore_index=True)[["image_id", "path"]]
    emb = embed_images(wd, clip, to_embed, cfg.batch_size, cfg.num_workers, cfg.part_size, cfg.progress)
    if emb.n_done:
        say(f"embedded {emb.n_done} images with {model} ({emb.n_skipped} already done, {emb.n_failed} unreadable)")
    t0 = lap("embed", t0)
    ids, vecs = load_embeddings(wd, model)
    index_info = update_index(wd, model, cfg.index, embeddings=(ids, vecs))
    t0 = lap("index", t0)

    pos = pd.Series(np.arange(len(ids)), index=ids)
    scored_rows = scored_rows[scored_rows["image_id"].isin(pos.index)].sort_values("image_id").reset_index(drop=True)
    refs_rows = refs_rows[refs_rows["image_id"].isin(pos.index)].sort_values("image_id").reset_index(drop=True)

    # -- fingerprints: the scoring context (what image scores depend on) and the inputs
    # A user's file with `replace_defaults = true` may drop `art-by`; the metric still needs a text.
    art_by = templates.get("art-by", ART_BY_FALLBACK)
    catalog_ids = artists["artist_id"].astype(str).tolist()
    names = artists["name"].astype(str).tolist()
    context = {
        "model": model,
        "catalog": _sha(list(zip(catalog_ids, names, strict=True))),
        "art_by": art_by,
        "refs": _sha(sorted(refs_rows["image_id"].astype(int).tolist()) + sorted(refs_rows["artist_id"].tolist())),
        "retrieval_k": cfg.retrieval_k,
    }
    image_key = images[["image_id", "sha256", "error", "checkpoint", "artist_id", "template", "seed", "prompt", "path"]]
    inputs_fp = {
        "context": _sha(context),
        "images": _frame_digest(image_key.sort_values("image_id")),
        "artists": _sha(artists.astype(str).values.tolist()),
        "templates": _sha(templates),
        # only the columns written: a record's own timestamps (added_at) are not news
        "checkpoints": _sha([{c: r.get(c) for c in CHECKPOINT_COLUMNS} for r in ckpt_records]),
        "runs": _sha([{c: r.get(c) for c in RUN_COLUMNS} for r in run_records]),
        "config": _sha({k: v for k, v in asdict(cfg).items() if k not in ("progress", "lock_timeout", "store_timeout", "num_workers", "batch_size", "part_size")}),
        "embedding_errors": _sha(sorted(emb.errors.items())),
    }
    previous = state["fingerprint"] or {}
    if previous.get("inputs") == inputs_fp and emb.n_done == 0 and index_info.added == 0:
        say(f"score: nothing new for {model} ({len(scored_rows)} images already scored)")
        return ScoreSummary(None, model, noop=True, n_images=len(scored_rows), n_skipped=len(scored_rows), index=asdict(index_info), seconds=timings)
    same_context = previous.get("context") == inputs_fp["context"]
    old_scores = state["scores"] if (same_context and state["scores"] is not None) else pd.DataFrame(columns=["image_id", "metric", "value"])
    already = set(old_scores["image_id"].astype(int).tolist()) if len(old_scores) else set()
    new_mask = ~scored_rows["image_id"].isin(already).to_numpy()

    # -- text embeddings (cached on disk by model and text)
    tdir = text_cache_dir(wd, model)
    artist_text_vecs = embed_texts(clip, [Template("art-by", art_by).render(n) for n in names], cache_dir=tdir, progress=cfg.progress)
    prompts = scored_rows["prompt"].fillna("").astype(str)
    uniq = sorted(set(prompts.tolist()))
    prompt_vecs_u = embed_texts(clip, uniq, cache_dir=tdir, progress=cfg.progress) if uniq else np.zeros((0, clip.embed_dim), np.float32)
    prompt_index = {p: i for i, p in enumerate(uniq)}
    prompt_vecs = prompt_vecs_u[[prompt_index[p] for p in prompts]] if len(prompts) else np.zeros((0, clip.embed_dim), np.float32)
    t0 = lap("texts", t0)

    labels: dict[str, dict[str, bool]] = {}
    for col in ("recognized_sdxl", "recognized_sd1"):
        if col in artists:
            parsed = {a: label_to_bool(v) for a, v in zip(artists["artist_id"], artists[col], strict=True)}
            labels[col] = {a: v for a, v in parsed.items() if v is not None}
    inputs = EvalInputs(
        image_ids=scored_rows["image_id"].to_numpy(dtype=np.int64),
        vecs=vecs[pos.loc[scored_rows["image_id"]].to_numpy()] if len(scored_rows) else np.zeros((0, vecs.shape[1] if vecs.ndim == 2 else clip.embed_dim), np.float32),
        checkpoint=scored_rows["checkpoint"].astype(object).to_numpy(),
        artist_id=scored_rows["artist_id"].fillna("").astype(object).to_numpy(),
        template=scored_rows["template"].fillna("").astype(object).to_numpy(),
        seed=scored_rows["seed"].fillna(-1).to_numpy(dtype=np.int64),
        prompt_vecs=prompt_vecs,
        catalog_ids=catalog_ids,
        artist_text_vecs=artist_text_vecs,
        ref_vecs=vecs[pos.loc[refs_rows["image_id"]].to_numpy()] if len(refs_rows) else None,
        ref_artist=refs_rows["artist_id"].astype(object).to_numpy() if len(refs_rows) else None,
        labels=labels,
        baseline_artist=BASELINE_ARTIST_ID,
        retrieval_k=cfg.retrieval_k,
        recognized_threshold=cfg.recognized_threshold,
    )
    meta = scored_rows[["image_id", "checkpoint", "artist_id", "template", "seed"]].copy()
    meta["seed"] = meta["seed"].fillna(-1).astype("int64")
    tables = compute_scores(inputs, new_mask, old_scores, meta, model, cfg, pairs) if len(scored_rows) else {}
    t0 = lap("metrics", t0)

    # -- reference prototypes
    proto_rows, ref_rows = [], []
    for artist, part in refs_rows.groupby("artist_id", sort=True):
        v = vecs[pos.loc[part["image_id"]].to_numpy()].mean(axis=0)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        proto_rows.append({"artist_id": artist, "model": model, "n": len(part), "embedding": v.astype(np.float32).tolist()})
        ref_rows.extend({"artist_id": artist, "image_id": int(i)} for i in part["image_id"])

    # -- one transaction
    run_id = f"score-{started.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    cfg_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    summary = ScoreSummary(
        run_id, model,
        n_images=len(scored_rows),
        n_embedded=emb.n_done,
        n_scored=int(new_mask.sum()),
        n_skipped=int((~new_mask).sum()),
        n_failed=emb.n_failed,
        index=asdict(index_info),
    )
    errors = pd.DataFrame(
        [{"image_id": i, "model": model, "error": e, "run_id": run_id} for i, e in sorted(emb.errors.items())],
        columns=["image_id", "model", "error", "run_id"],
    )
    t_write = time.perf_counter()
    rows = _write_all(wd, cfg, model, run_id, _changed_rows(images, state["images"]), artists if artists_from != "images" else None, templates,
                      _checkpoints_frame(ckpt_records, checkpoints_seen), _runs_frame(run_records), tables, errors,
                      pd.DataFrame(ref_rows, columns=["artist_id", "image_id"]),
                      pd.DataFrame(proto_rows, columns=["artist_id", "model", "n", "embedding"]),
                      {"context": inputs_fp["context"], "inputs": inputs_fp},
                      started, cfg_json, timings, summary, index_info, t_start, t_write)
    summary.rows = rows
    summary.seconds = timings
    say(
        f"scored {summary.n_scored} new images ({summary.n_skipped} already scored, {summary.n_failed} unreadable) "
        f"with {model}; wrote {sum(rows.values())} rows to {wd.store} (run {run_id})"
    )
    return summary


def _write_all(wd, cfg, model, run_id, images, artists, templates, checkpoints, runs, tables, errors, ref_rows,
               proto_rows, fingerprint, started, cfg_json, timings, summary, index_info, t_start, t_write) -> dict[str, int]:
    import pandas as pd

    from catalog.atomic import atomic_write_text
    from evaluator.workspace.store import open_store, transaction, upsert_df

    written: dict[str, int] = {}
    with open_store(wd.store, timeout=cfg.store_timeout) as con, transaction(con):
        if artists is not None and len(artists):
            cols = [c for c in artists.columns if c in _table_columns(con, "artists")]
            written["artists"] = upsert_df(con, "artists", artists[cols], ["artist_id"])
        written["templates"] = upsert_df(con, "templates", pd.DataFrame({"name": list(templates), "text": list(templates.values())}), ["name"])
        written["checkpoints"] = upsert_df(con, "checkpoints", checkpoints, ["name"])
        written["runs"] = upsert_df(con, "runs", runs, ["run_id"])
        written["images"] = upsert_df(con, "images", images, ["image_id"])
        written["embedding_errors"] = upsert_df(con, "embedding_errors", errors, ["image_id", "model"])
        for table, key in (
            ("image_scores", ["image_id", "model", "metric"]),
            ("artist_scores", ["checkpoint", "artist_id", "model", "metric"]),
            ("checkpoint_scores", ["checkpoint", "model", "metric"]),
            ("comparisons", ["base", "finetune", "artist_id", "model", "metric"]),
        ):
            frame = tables.get(table)
            if frame is not None and len(frame):
                written[table] = upsert_df(con, table, frame, key)
        neighbors = tables.get("artist_neighbors")
        if neighbors is not None and len(neighbors):
            con.execute("DELETE FROM artist_neighbors WHERE model = ?", [model])
            written["artist_neighbors"] = upsert_df(con, "artist_neighbors", neighbors, ["checkpoint", "model", "artist_id", "rank"])
        written["reference_images"] = upsert_df(con, "reference_images", ref_rows, ["artist_id", "image_id"])
        written["reference_prototypes"] = upsert_df(con, "reference_prototypes", proto_rows, ["artist_id", "model"])
        now = datetime.now(UTC).replace(tzinfo=None)
        upsert_df(con, "score_state", pd.DataFrame([{
            "model": model, "fingerprint": json.dumps(fingerprint, sort_keys=True), "run_id": run_id, "updated_at": now,
        }]), ["model"])
        timings["write"] = round(time.perf_counter() - t_write, 3)
        timings["total"] = round(time.perf_counter() - t_start, 3)
        run_rows = [{
            "run_id": run_id, "kind": "score", "started_at": started, "finished_at": now, "status": "ok",
            "config": json.dumps(cfg_json, default=str), "versions": json.dumps(versions()), "git_rev": git_rev(),
            "device": cfg.device, "dtype": cfg.dtype, "timings": json.dumps(timings), "n_done": summary.n_scored,
            "n_skipped": summary.n_skipped, "n_failed": summary.n_failed, "host": socket.gethostname(),
            "message": f"model {model}; index {index_info.kind} ntotal {index_info.ntotal} recall@10 {index_info.recall_at_10}",
        }]
        if index_info.added:
            run_rows.append({
                "run_id": f"index-{run_id.removeprefix('score-')}", "kind": "index", "started_at": started,
                "finished_at": now, "status": "ok", "config": json.dumps(asdict(cfg.index)),
                "versions": json.dumps(versions()), "git_rev": git_rev(), "device": "cpu", "dtype": "float32",
                "timings": json.dumps({"seconds": index_info.seconds}), "n_done": index_info.added, "n_skipped": 0,
                "n_failed": 0, "host": socket.gethostname(),
                "message": json.dumps(asdict(index_info)),
            })
        written["runs"] += upsert_df(con, "runs", pd.DataFrame(run_rows), ["run_id"])
    atomic_write_text(wd.runs / f"{run_id}.json", json.dumps(run_rows[0], indent=2, default=str) + "\n")
    return written


def _table_columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
