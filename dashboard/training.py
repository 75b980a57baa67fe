"""The Training page: a fine-tune's curves, the step to keep, and its validation images.

Reads the store's ``training_*`` tables (written by ``atelier train`` at every saved
step) and ``DIR/training/<output_name>/losses.jsonl`` (the loss of every optimizer
step); writes nothing. Like every page it never imports torch.

The step shown as chosen follows ``evaluator.training.validation.choose_step``: the
highest ``reference_similarity`` (the step's images against the held-out images of the
style) among the steps whose ``memorization_max`` (the closest any of its images comes to
a training image, CLIP cosine) stays under the threshold (default
``MEMORIZATION_THRESHOLD``; a slider changes it). A step without both figures is never
chosen, nor step 0: the base's own figures and images, where the curves start.
"""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries as q
from dashboard.report import md_text
from evaluator.training.validation import MEMORIZATION_THRESHOLD, choose_step
from evaluator.workspace.workdir import Workdir

CURVE_METRICS = ("reference_similarity", "retrieval_map@10", "clip_score", "memorization_max",
                 "memorization_mean", "memorization_heldout")
MAX_LOSS_POINTS = 5000  # a long run's per-step losses are thinned to this many points


# ------------------------------------------------------------------ queries


def has_training_tables(store: q.Store) -> bool:
    found = store.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'training_runs'")
    return bool(found)


def output_names(store: q.Store) -> list[str]:
    frame = store.df("SELECT output_name, max(created) AS last FROM training_runs GROUP BY output_name ORDER BY last DESC")
    return frame["output_name"].tolist()


def training_runs(store: q.Store, output_name: str) -> pd.DataFrame:
    return store.df(
        "SELECT run, method, base, dataset, dataset_fingerprint, n_train, n_validation, created "
        "FROM training_runs WHERE output_name = ? ORDER BY created", (output_name,))


# Per saved step, the run that recorded it last (a resumed run records its steps again).
LATEST = (
    "WITH latest AS (SELECT run, step FROM (SELECT s.run, s.step, row_number() OVER "
    "(PARTITION BY s.step ORDER BY s.recorded_at DESC, s.run DESC) AS k FROM training_steps s "
    "JOIN training_runs r ON r.run = s.run WHERE r.output_name = ?) WHERE k = 1) "
)


def training_steps(store: q.Store, output_name: str) -> pd.DataFrame:
    """One row per saved step (a step saved again by a resumed run: its latest record)."""
    return store.df(
        LATEST + "SELECT s.step, s.checkpoint, s.train_loss, s.val_loss, s.lr, s.seconds, s.validation_status, "
        "s.validation_error, s.run FROM training_steps s JOIN latest USING (run, step) ORDER BY s.step",
        (output_name,))


def step_metrics(store: q.Store, output_name: str) -> pd.DataFrame:
    return store.df(
        LATEST + "SELECT m.step, m.model, m.metric, m.value, m.n, m.reason FROM training_metrics m "
        "JOIN latest USING (run, step) ORDER BY m.step, m.metric", (output_name,))


def step_images(store: q.Store, output_name: str) -> pd.DataFrame:
    return store.df(
        LATEST + "SELECT i.step, i.image_id, i.prompt, i.seed, i.path, i.thumb_path, "
        "mm.similarity AS memorization, mm.nearest_path FROM training_images i JOIN latest USING (run, step) "
        "LEFT JOIN training_memorization mm ON mm.run = i.run AND mm.step = i.step AND mm.image_id = i.image_id "
        "ORDER BY i.step, i.prompt, i.seed", (output_name,))


def split_counts(store: q.Store, output_name: str) -> pd.DataFrame:
    return store.df(
        "SELECT s.run, s.side, count(*) AS images, count(DISTINCT s.group_key) AS groups FROM training_split s "
        "JOIN training_runs r ON r.run = s.run WHERE r.output_name = ? GROUP BY s.run, s.side ORDER BY s.run, s.side",
        (output_name,))


def held_out_images(store: q.Store, output_name: str, limit: int = 24) -> pd.DataFrame:
    """The held-out images as imported references (their copies inside the workdir)."""
    return store.df(
        "SELECT DISTINCT i.image_id, i.path, i.thumb_path, i.source_path FROM images i "
        "JOIN training_split s ON s.sha256 = i.source_sha256 AND s.side = 'validation' "
        "JOIN training_runs r ON r.run = s.run WHERE r.output_name = ? AND i.source = 'reference' "
        "ORDER BY i.image_id LIMIT ?", (output_name, limit))


def step_losses(workdir: Path, output_name: str) -> pd.DataFrame:
    """The per-optimizer-step losses the loop appends to ``losses.jsonl`` (empty when absent)."""
    try:
        path = Workdir(Path(workdir)).resolve_inside(f"training/{output_name}/losses.jsonl")
    except ValueError:
        return pd.DataFrame(columns=["step", "loss"])
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                rows.append({"step": int(record["step"]), "loss": float(record["loss"])})
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill: the rest of the curve still shows
    frame = pd.DataFrame(rows, columns=["step", "loss"]).drop_duplicates("step", keep="last")
    if len(frame) > MAX_LOSS_POINTS:
        frame = frame.iloc[:: len(frame) // MAX_LOSS_POINTS + 1]
    return frame


# ------------------------------------------------------------------ the page


def page_training(store: q.Store, model: str) -> None:
    st.header("Training")
    if not has_training_tables(store) or not output_names(store):
        st.info("No training run recorded yet: `atelier train CONFIG.toml --workdir DIR` records every saved step here.")
        return
    names = output_names(store)
    output_name = st.selectbox("Fine-tune (output_name)", names, key="training-output")
    runs = training_runs(store, output_name)
    steps = training_steps(store, output_name)
    metrics = step_metrics(store, output_name)
    threshold = st.slider("Memorization threshold (CLIP cosine to the nearest training image)", 0.5, 1.0,
                          float(MEMORIZATION_THRESHOLD), 0.01, key="training-threshold")
    choice = choose_step(metrics, threshold)
    cols = st.columns(4)
    cols[0].metric("Saved steps", int((steps["step"] > 0).sum()))  # step 0 is the base
    cols[1].metric("Chosen step", "none" if choice.step is None else str(choice.step))
    cols[2].metric("Training images", int(runs["n_train"].iloc[-1]) if len(runs) else 0)
    cols[3].metric("Validation images", int(runs["n_validation"].iloc[-1]) if len(runs) else 0)
    st.caption(md_text(f"Chosen by rule: {choice.reason}."))
    _curves(store, output_name, steps, metrics, threshold, choice.step)
    _step_table(steps, metrics)
    _gallery(store, output_name, steps, choice.step)
    _held_out(store, output_name)
    with st.expander("Runs and split"):
        st.dataframe(runs, hide_index=True, key="training-runs")
        st.dataframe(split_counts(store, output_name), hide_index=True, key="training-split")


def _curves(store: q.Store, output_name: str, steps: pd.DataFrame, metrics: pd.DataFrame,
            threshold: float, chosen: int | None) -> None:
    st.subheader("Loss")
    per_step = step_losses(store.workdir, output_name).assign(series="train (every step)")
    saved = steps.melt(id_vars=["step"], value_vars=["train_loss", "val_loss"], var_name="series", value_name="loss")
    saved = saved.dropna(subset=["loss"])
    losses = pd.concat([per_step, saved], ignore_index=True)
    if losses.empty:
        st.info("No loss recorded yet.")
    else:
        chart = alt.Chart(losses).mark_line(point=alt.OverlayMarkDef(size=20)).encode(
            x=alt.X("step:Q"), y=alt.Y("loss:Q", scale=alt.Scale(zero=False)), color="series:N",
            tooltip=["series", "step", alt.Tooltip("loss:Q", format=".5f")])
        st.altair_chart(_with_chosen(chart, chosen), width="stretch")
    st.subheader("Validation figures per saved step")
    shown = metrics[metrics["metric"].isin(CURVE_METRICS)].dropna(subset=["value"])
    if shown.empty:
        missing = metrics.dropna(subset=["reason"])["reason"].drop_duplicates().tolist()
        st.info(md_text("No validation figure yet" + (f": {'; '.join(missing)}" if missing else ".")))
        return
    base = alt.Chart(shown).mark_line(point=True).encode(
        x="step:Q", y=alt.Y("value:Q", scale=alt.Scale(zero=False)), color="metric:N",
        tooltip=["metric", "step", alt.Tooltip("value:Q", format=".4f"), "n"])
    memo = shown[shown["metric"].str.startswith("memorization")]
    style = shown[~shown["metric"].str.startswith("memorization") & (shown["metric"] != "clip_score")]
    left, right = st.columns(2)
    left.caption("Style against the held-out images (higher is better)")
    left.altair_chart(_with_chosen(base.transform_filter(alt.FieldOneOfPredicate("metric", style["metric"].unique().tolist())), chosen),
                      width="stretch")
    right.caption(f"Memorization (the rule keeps steps under {threshold:g})")
    rule = alt.Chart(pd.DataFrame({"value": [threshold]})).mark_rule(strokeDash=[4, 4], color="#c62828").encode(y="value:Q")
    right.altair_chart(_with_chosen(base.transform_filter(alt.FieldOneOfPredicate("metric", memo["metric"].unique().tolist())) + rule,
                                    chosen), width="stretch")
    adherence = shown[shown["metric"] == "clip_score"]
    if not adherence.empty:
        st.caption("Prompt adherence (CLIPScore of the validation prompts)")
        st.altair_chart(_with_chosen(alt.Chart(adherence).mark_line(point=True).encode(
            x="step:Q", y=alt.Y("value:Q", title="clip_score", scale=alt.Scale(zero=False)),
            tooltip=["step", alt.Tooltip("value:Q", format=".2f")]), chosen), width="stretch")


def _with_chosen(chart: alt.Chart, chosen: int | None):
    if chosen is None:
        return chart
    mark = alt.Chart(pd.DataFrame({"step": [chosen]})).mark_rule(color="#2e7d32", strokeWidth=2).encode(x="step:Q")
    return chart + mark


def _step_table(steps: pd.DataFrame, metrics: pd.DataFrame) -> None:
    st.subheader("Saved steps")
    wide = metrics.pivot_table(index="step", columns="metric", values="value", aggfunc="first") if len(metrics) else None
    table = steps.drop(columns=["run"]).set_index("step")
    if wide is not None and len(wide.columns):
        table = table.join(wide, how="left")
    st.dataframe(table.reset_index(), hide_index=True, key="training-steps")
    reasons = metrics.dropna(subset=["reason"])
    if len(reasons):
        st.caption(md_text("Figures not computed: " + "; ".join(
            f"step {r.step} {r.metric}: {r.reason}" for r in reasons.head(10).itertuples())))


def _gallery(store: q.Store, output_name: str, steps: pd.DataFrame, chosen: int | None) -> None:
    st.subheader("Validation images, step by step")
    images = step_images(store, output_name)
    if images.empty:
        st.info("No validation image yet (set validation_prompts in the training config).")
        return
    saved = sorted(images["step"].unique().tolist())
    units = images[["prompt", "seed"]].drop_duplicates().reset_index(drop=True)
    labels = [f"{r.prompt} · seed {r.seed}" for r in units.itertuples()]
    picked = st.selectbox("Prompt and seed", range(len(labels)), format_func=lambda i: labels[i], key="training-unit")
    unit = units.iloc[int(picked)]
    strip = images[(images["prompt"] == unit["prompt"]) & (images["seed"] == unit["seed"])]
    columns = st.columns(min(len(saved), 6))
    for index, row in enumerate(strip.itertuples()):
        star = " (chosen)" if chosen is not None and int(row.step) == chosen else " (base)" if row.step == 0 else ""
        memo = "" if pd.isna(row.memorization) else f", memorization {row.memorization:.3f}"
        _image(columns[index % len(columns)], store.workdir, row.thumb_path or row.path, f"step {row.step}{star}{memo}")
    default = saved.index(chosen) if chosen in saved else len(saved) - 1
    step = st.select_slider("Every image of step", options=saved, value=saved[default], key="training-step")
    at_step = images[images["step"] == step]
    grid = st.columns(min(len(at_step), 4))
    for index, row in enumerate(at_step.itertuples()):
        nearest = "" if not isinstance(row.nearest_path, str) else f" · nearest training image {Path(row.nearest_path).name}"
        _image(grid[index % len(grid)], store.workdir, row.thumb_path or row.path,
               f"{row.prompt} · seed {row.seed}{nearest}")


def _held_out(store: q.Store, output_name: str) -> None:
    held = held_out_images(store, output_name)
    if held.empty:
        return
    st.subheader("Held-out images (the references of the style figures)")
    grid = st.columns(min(len(held), 6))
    for index, row in enumerate(held.itertuples()):
        _image(grid[index % len(grid)], store.workdir, row.thumb_path or row.path, "held out")


def _image(container, workdir: Path, relpath: str | None, caption: str) -> None:
    path = q.image_file(workdir, relpath)
    if path is None:
        container.caption(md_text(f"{caption} (no image)"))
        return
    container.image(str(path), caption=md_text(caption), width="content")
