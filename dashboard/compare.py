"""The Compare page: what a fine-tune kept, gained and lost against its base, at a glance.

Reads the store through ``dashboard.queries`` only. The page answers the question users
come with in the order they ask it: how many artists changed (counts by verdict), which
metrics agree (a verdict matrix, artists x metrics), by how much and how surely (the
scatter and a forest plot of delta with its interval), what it looks like (the base
image beside the fine-tune's, same template and seed), and where to look next (links to
the Artist and Gallery pages, the filtered artists carried over to the Gallery).
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries as q
from dashboard.report import md_text
from dashboard.views import VERDICT_COLORS, _fmt, _show_image, artist_filter_widgets, open_artist
from evaluator.demo.summary import headline_metric

VERDICTS = ["gained", "lost", "kept", "undecided"]
MATRIX_ROWS = 40  # artists in the verdict matrix: the biggest changes first
FOREST_ROWS = 10  # per side (lost, gained) in the forest plot
THUMB_ROWS = 5  # lost and gained artists shown with images
GALLERY_CARRY = 240  # most artists carried to the Gallery at once (20 pages of 12)


def page_compare(store: q.Store, model: str) -> None:
    st.header("Compare a fine-tune with its base")
    pairs = q.comparison_pairs(store)
    pairs = pairs[pairs.model == model] if model else pairs
    if pairs.empty:
        st.info("No comparisons yet: `atelier score` compares each fine-tune with its base.")
        return
    combos = sorted({(b, f) for b, f in zip(pairs.base, pairs.finetune, strict=True)})
    c1, c2, c3 = st.columns([2, 2, 3])
    base, finetune = c1.selectbox("Base → fine-tune", combos, format_func=lambda p: f"{p[0]} → {p[1]}", key="cmp-pair")
    metrics = sorted(pairs[(pairs.base == base) & (pairs.finetune == finetune)].metric.unique())
    default = headline_metric(set(metrics))
    metric = c2.selectbox("Metric", metrics, index=metrics.index(default), key="cmp-metric")
    verdicts = tuple(c3.multiselect("Verdicts shown", VERDICTS, default=VERDICTS, key="cmp-verdicts") or VERDICTS)
    filt = artist_filter_widgets(store, "cmp", model, base)

    summary = q.comparison_summary(store, base, finetune, model, metric, filt)
    _summary_row(summary)
    if summary["artists"] == 0:
        st.info("No artist matches the filters.")
        return
    points = q.comparison_points(store, base, finetune, model, metric, filt, verdicts=verdicts)
    if points.empty:
        st.info("No artist has the chosen verdicts.")
        return
    _verdict_matrix(store, (base, finetune, model), metric, points)
    left, right = st.columns(2)
    left.subheader(f"{md_text(metric)}: base vs fine-tune")
    left.altair_chart(_scatter(points, base, finetune), width="stretch")
    right.subheader("Biggest changes, with their 95% interval")
    right.altair_chart(_forest(points, metric), width="stretch")
    _changed_lists(store, (base, finetune, model), metric, filt, summary)
    _all_artists(store, (base, finetune, model), metric, filt, verdicts, summary)


def _summary_row(summary: dict) -> None:
    cols = st.columns(6)
    cols[0].metric("Artists", f"{summary['artists']:,}")
    cols[1].metric("Gained", f"{summary['gained']:,}")
    cols[2].metric("Lost", f"{summary['lost']:,}")
    cols[3].metric("Kept", f"{summary['kept']:,}")
    cols[4].metric("Undecided", f"{summary['undecided']:,}")
    cols[5].metric("Mean Δ", _fmt(summary["mean_delta"]))
    st.caption("Gained / lost: the 95% bootstrap interval of the per-artist delta lies wholly above / below zero "
               "and the delta is at least the metric's min_effect (`atelier metrics list`); kept: the interval "
               "holds zero, or the change is real but smaller than min_effect (its verdict_reason says so); "
               "undecided: there is no interval (fewer than 2 seeds, or 2 images where no seed is known), so no "
               "conclusion.")
    if summary["undecided"]:
        st.warning(f"{summary['undecided']:,} of {summary['artists']:,} artists are undecided: no interval. "
                   "Give the images seeds (labels `seed` column, `--seed-from-filename`) or several images each.")


def _verdict_matrix(store: q.Store, pair: tuple[str, str, str], metric: str, points: pd.DataFrame) -> None:
    """Artists x metrics, each cell coloured by that metric's verdict: do the metrics agree?"""
    shown = points.head(MATRIX_ROWS)
    cells = q.verdict_matrix(store, *pair, shown.artist_id.tolist())
    st.subheader("Verdict matrix: every metric at once")
    st.caption(f"The {len(shown)} artists whose {md_text(metric)} changed most (of {len(points):,} shown); "
               "hover a cell for its delta and interval.")
    if cells.empty:
        st.info("No metric has a verdict for these artists.")
        return
    order = shown.name.tolist()
    chart = alt.Chart(cells).mark_rect(stroke="white").encode(
        x=alt.X("metric:N", title=None, axis=alt.Axis(labelAngle=-30, orient="top")),
        y=alt.Y("name:N", title=None, sort=order),
        color=alt.Color("verdict:N", scale=VERDICT_COLORS, legend=alt.Legend(orient="bottom")),
        tooltip=["name", "metric", "verdict", alt.Tooltip("delta:Q", format="+.4f"),
                 alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f")],
    ).properties(height=alt.Step(20))  # one 20 px band per artist, however many
    st.altair_chart(chart, width="stretch")


def _scatter(points: pd.DataFrame, base: str, finetune: str) -> alt.LayerChart:
    """Base value against fine-tune value; the diagonal (no change) is drawn under the points."""
    values = pd.concat([points.base_value, points.finetune_value]).dropna()
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    diagonal = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(
        color="black", strokeDash=[4, 4]).encode(x="x:Q", y="y:Q")
    dots = alt.Chart(points).mark_circle(size=28, opacity=0.75).encode(
        x=alt.X("base_value:Q", title=base, scale=alt.Scale(domain=[lo, hi])),
        y=alt.Y("finetune_value:Q", title=finetune, scale=alt.Scale(domain=[lo, hi])),
        color=alt.Color("verdict:N", scale=VERDICT_COLORS),
        tooltip=["name", "artist_id", "verdict", alt.Tooltip("delta:Q", format="+.4f"),
                 alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f")])
    return diagonal + dots


def _forest(points: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Delta with its interval for the top lost and gained artists, around the zero line."""
    rising = not q.lower_is_better(metric)
    decided = points[points.verdict.isin(["gained", "lost"])]
    top = pd.concat([
        decided[decided.verdict == "lost"].sort_values("delta", ascending=rising).head(FOREST_ROWS),
        decided[decided.verdict == "gained"].sort_values("delta", ascending=not rising).head(FOREST_ROWS),
    ])
    if top.empty:  # nothing decided: show the largest changes anyway, marked as they are
        top = points.head(2 * FOREST_ROWS)
    top = top.sort_values("delta")
    y = alt.Y("name:N", sort=top.name.tolist(), title=None)
    bars = alt.Chart(top).mark_rule(strokeWidth=2).encode(
        y=y, x=alt.X("ci_low:Q", title=f"Δ {metric}"), x2="ci_high:Q", color=alt.Color("verdict:N", scale=VERDICT_COLORS))
    dots = alt.Chart(top).mark_point(filled=True, size=50).encode(
        y=y, x="delta:Q", color=alt.Color("verdict:N", scale=VERDICT_COLORS),
        tooltip=["name", "verdict", alt.Tooltip("delta:Q", format="+.4f"),
                 alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="black", strokeDash=[4, 4]).encode(x="x:Q")
    return (zero + bars + dots).properties(height=alt.Step(22))  # one band per artist


def _changed_lists(store: q.Store, pair: tuple[str, str, str], metric: str, filt: q.ArtistFilter,
                   summary: dict) -> None:
    """Gained and lost artists: the first few with images and links, then the full tables."""
    base, finetune, model = pair
    rising = not q.lower_is_better(metric)  # biggest change first: a gain is a rise, or a fall when lower is better
    gained_col, lost_col = st.columns(2)
    for col, verdict, descending in ((gained_col, "gained", rising), (lost_col, "lost", not rising)):
        table = q.comparison_table(store, base, finetune, model, metric, filt, verdict=verdict, order="delta",
                                   descending=descending, limit=50)
        col.subheader(f"{verdict.capitalize()} ({summary[verdict]:,})")
        if table.empty:
            col.caption(f"No artist {verdict} on {md_text(metric)}.")
            continue
        _thumbnail_rows(col, store, pair, table.head(THUMB_ROWS), verdict)
        col.dataframe(table[["name", "base_value", "finetune_value", "delta", "ci_low", "ci_high"]],
                      hide_index=True, key=f"cmp-{verdict}")


def _thumbnail_rows(col, store: q.Store, pair: tuple[str, str, str], rows: pd.DataFrame, verdict: str) -> None:
    base, finetune, _ = pair
    thumbs = q.pair_thumbnails(store, base, finetune, rows.artist_id.tolist()).set_index("artist_id")
    for row in rows.itertuples(index=False):
        box = col.container(border=True)
        ci = "no CI" if pd.isna(row.ci_low) else f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]"
        box.markdown(f"**{md_text(row.name)}** · Δ {row.delta:+.4f} {ci}")
        left, right, links = box.columns([2, 2, 1])
        if row.artist_id in thumbs.index:
            pair_row = thumbs.loc[row.artist_id]
            _show_image(left, store.workdir, pair_row.base_thumb, f"{base} · seed {pair_row.seed}")
            _show_image(right, store.workdir, pair_row.finetune_thumb, f"{finetune} · seed {pair_row.seed}")
        else:
            left.caption("no base and fine-tune image share a template and seed")
        links.button("Artist", key=f"cmp-{verdict}-artist-{row.artist_id}", on_click=open_artist,
                     args=(row.name,))
        links.button("Gallery", key=f"cmp-{verdict}-gallery-{row.artist_id}", on_click=_open_gallery,
                     args=([row.artist_id], [base, finetune]))


def _open_gallery(artist_ids: list[str], checkpoints: list[str]) -> None:
    """Show these artists (and these checkpoints) in the Gallery: the filter carries over."""
    st.session_state["gal-artist-ids"] = list(artist_ids)
    st.session_state["gal-ckpts"] = list(checkpoints)
    st.session_state["gal-page"] = 1
    st.session_state["page"] = "Gallery"


def _all_artists(store: q.Store, pair: tuple[str, str, str], metric: str, filt: q.ArtistFilter,
                 verdicts: tuple[str, ...], summary: dict) -> None:
    base, finetune, model = pair
    st.subheader("All artists")
    c1, c2, c3, c4 = st.columns(4)
    order = c1.selectbox("Order by", ["delta", "base_value", "finetune_value", "name"], key="cmp-order")
    descending = c2.toggle("Descending", value=True, key="cmp-desc")
    page_size = c3.selectbox("Rows per page", [50, 100, 250], key="cmp-size")
    shown = sum(summary[v] for v in verdicts)
    pages = max(1, math.ceil(shown / page_size))
    page = c4.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="cmp-page")
    table = q.comparison_table(store, base, finetune, model, metric, filt, order=order, descending=descending,
                               limit=page_size, offset=(int(page) - 1) * page_size, verdicts=verdicts)
    st.dataframe(table, hide_index=True, key="cmp-table")
    carried = q.comparison_table(store, base, finetune, model, metric, filt, order=order, descending=descending,
                                 limit=GALLERY_CARRY, verdicts=verdicts)
    st.button(f"Open these {len(carried):,} artists in the Gallery", key="cmp-to-gallery", on_click=_open_gallery,
              args=(carried.artist_id.tolist(), [base, finetune]))
