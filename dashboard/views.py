"""The pages of the dashboard. Each takes the read-only ``Store`` and the chosen model.

Only ``dashboard.queries`` touches the database; this module lays out widgets, tables
and altair charts. Searches by text or image run `atelier search` in a child process
(``dashboard.search``): torch, open_clip and faiss never load into the dashboard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import queries as q
from dashboard import search
from dashboard.report import md_text

lower_is_better = q.lower_is_better
VERDICT_COLORS = alt.Scale(domain=["gained", "kept", "lost", "undecided"],
                           range=["#2e7d32", "#9e9e9e", "#c62828", "#f9a825"])
ANY = "(any)"


def sidebar_model(store: q.Store) -> str:
    """The embedding model whose scores the pages show (a choice only when several exist)."""
    models = q.models(store)
    if not models:
        st.sidebar.info("No scores yet: run `atelier score`.")
        return ""
    if len(models) == 1:
        st.sidebar.caption(f"model: {md_text(models[0])}")
        return models[0]
    return st.sidebar.selectbox("Embedding model", models, key="model")


def artist_filter_widgets(store: q.Store, key: str, model: str = "", checkpoint: str = "") -> q.ArtistFilter:
    """Tag / movement / medium / recognition / name filters, in an expander.

    Recognition is either the catalog's human label (SDXL or SD1 column) or, given a
    checkpoint, the automatic `recognized` verdict the scorer gave for that checkpoint.
    """
    options = q.filter_options(store)
    with st.expander("Filter artists", expanded=False):
        c1, c2, c3 = st.columns(3)
        tag = c1.selectbox("Tag", [ANY, *options["tag"]], key=f"{key}-tag")
        movement = c2.selectbox("Movement", [ANY, *options["movement"]], key=f"{key}-movement")
        medium = c3.selectbox("Medium", [ANY, *options["medium"]], key=f"{key}-medium")
        c4, c5, c6, c7 = st.columns(4)
        column = c4.selectbox("Recognition label", ["recognized_sdxl", "recognized_sd1"], key=f"{key}-reccol")
        recognized = c5.selectbox("Recognized (label)", [ANY, "yes", "no", "unsure", "blank"], key=f"{key}-rec")
        auto = ANY
        if model and checkpoint:
            auto = c6.selectbox(f"Recognized by {md_text(checkpoint)} (auto)", [ANY, "yes", "no"], key=f"{key}-auto")
        name = c7.text_input("Name contains", key=f"{key}-name")
    return q.ArtistFilter(
        tag="" if tag == ANY else tag,
        movement="" if movement == ANY else movement,
        medium="" if medium == ANY else medium,
        recognized_column=column,
        recognized="" if recognized == ANY else recognized,
        name=name or "",
        auto_recognized="" if auto == ANY else auto,
        auto_checkpoint=checkpoint,
        auto_model=model,
    )


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.4g}"


def _show_image(container, workdir: Path, relpath: str | None, caption: str | None = None,
                width: int | str = "content") -> bool:
    path = q.image_file(workdir, relpath)
    caption = md_text(caption) if caption else None  # names, templates, errors: stored text
    if path is None:
        container.caption(f"{caption or ''} (no image)")
        return False
    container.image(str(path), caption=caption, width=width)
    return True


# ------------------------------------------------------------------ Leaderboard

def page_leaderboard(store: q.Store, model: str) -> None:
    st.header("Leaderboard")
    stats = q.overview(store)
    cols = st.columns(5)
    for col, (label, key) in zip(cols, [("Checkpoints", "checkpoints"), ("Artists evaluated", "artists_evaluated"),
                                        ("Images", "images"), ("Failed images", "errors"), ("Runs", "runs")], strict=True):
        col.metric(label, f"{stats[key]:,}")
    st.caption(f"Artists evaluated: those with scores, of the {stats['artists']:,} rows of the catalog.")
    if not model:
        return
    long = q.leaderboard(store, model)
    if long.empty:
        st.info(f"No checkpoint scores for model {md_text(model)} yet.")
        return
    metrics = sorted(long["metric"].unique())
    c1, c2 = st.columns([2, 1])
    sort_metric = c1.selectbox("Sort by", metrics, index=metrics.index("artist_similarity")
                               if "artist_similarity" in metrics else 0, key="lb-sort")
    best_first = c2.toggle("Best first", value=True, key="lb-best")
    values = long.pivot(index="checkpoint", columns="metric", values="value")
    table = pd.DataFrame(index=values.index)
    for metric in metrics:
        table[metric] = values[metric]
        lo = long[long.metric == metric].set_index("checkpoint")
        table[f"{metric} CI"] = [
            f"[{_fmt(lo.at[c, 'ci_low'])}, {_fmt(lo.at[c, 'ci_high'])}]" if c in lo.index and pd.notna(lo.at[c, "ci_low"]) else ""
            for c in table.index
        ]
    ascending = lower_is_better(sort_metric) == best_first
    table = table.sort_values(sort_metric, ascending=ascending).reset_index()
    number = st.column_config.NumberColumn(format="%.4g", width="small")
    st.dataframe(table, hide_index=True, key="lb-table", width="stretch",
                 column_config={m: number for m in metrics} | {f"{m} CI": st.column_config.TextColumn(width="small")
                                                               for m in metrics})
    st.caption("Values are means over artists; CI = 95% interval. "
               f"Lower is better for: {md_text(', '.join(m for m in metrics if lower_is_better(m)) or 'none')}.")
    _null_reasons(long)

    chosen = long[long.metric == sort_metric]
    order = table.checkpoint.tolist()  # the table's order, best first
    bars = alt.Chart(chosen).mark_bar().encode(
        x=alt.X("value:Q", title=sort_metric), y=alt.Y("checkpoint:N", sort=order), tooltip=["checkpoint", "value", "ci_low", "ci_high", "n"])
    rules = alt.Chart(chosen).mark_rule(color="black").encode(x="ci_low:Q", x2="ci_high:Q", y=alt.Y("checkpoint:N", sort=order))
    st.altair_chart(bars + rules, width="stretch")

    st.subheader(f"Distribution of {md_text(sort_metric)} over artists")
    hist = q.metric_histogram(store, model, sort_metric)
    if not hist.empty:
        # Outlined steps, one per checkpoint: overlaid bars hide each other past two checkpoints.
        hist = hist.assign(middle=(hist["start"] + hist["end"]) / 2)
        chart = alt.Chart(hist).mark_line(interpolate="step", strokeWidth=2).encode(
            x=alt.X("middle:Q", title=sort_metric), y=alt.Y("artists:Q", title="artists"),
            color="checkpoint:N", tooltip=["checkpoint", "start", "end", "artists"])
        st.altair_chart(chart, width="stretch")

    st.subheader("Provenance")
    st.dataframe(q.checkpoint_provenance(store), hide_index=True, key="lb-prov")
    score_runs = q.score_runs(store)
    if not score_runs.empty:
        st.caption("Scoring runs")
        st.dataframe(score_runs, hide_index=True, key="lb-score-runs")


def _null_reasons(long: pd.DataFrame) -> None:
    """Say why a leaderboard value is NULL (e.g. an AUC over too few labelled artists)."""
    if "reason" not in long:
        return
    null = long[long["value"].isna() & long["reason"].notna()]
    if null.empty:
        return
    lines = [f"- **{md_text(r.checkpoint)}** · {md_text(r.metric)}: {md_text(r.reason)}" for r in null.itertuples(index=False)]
    st.warning("Not computed (NULL):\n" + "\n".join(lines))


# ------------------------------------------------------------------ Compare

# The Compare page lives in dashboard/compare.py.


# ------------------------------------------------------------------ Gallery

def _image_parameters(row: pd.Series) -> pd.DataFrame:
    fields = ["checkpoint", "artist_name", "artist_id", "template", "prompt", "negative_prompt", "seed",
              "width", "height", "steps", "guidance", "scheduler", "run_id", "unit_id", "image_id", "sha256",
              "seconds", "created_at", "error", "path"]
    return pd.DataFrame({"field": fields, "value": [str(row.get(f, "")) for f in fields]})


def show_image_detail(store: q.Store, image_id: int, key: str) -> None:
    row, scores = q.image_detail(store, image_id)
    if row.empty:
        st.warning(f"image {image_id} is not in the store")
        return
    record = row.iloc[0]
    with st.container(border=True):
        left, right = st.columns([1, 1])
        shown = _show_image(left, store.workdir, record["path"], f"{record['artist_name'] or record['artist_id']} · {record['checkpoint']}")
        if shown:
            png_text = _png_parameters(q.image_file(store.workdir, record["path"]))
            if png_text:
                left.code(png_text, language=None)
        right.markdown("**Generation parameters**")
        right.dataframe(_image_parameters(record), hide_index=True, key=f"{key}-params")
        if not scores.empty:
            right.markdown("**Scores**")
            right.dataframe(scores, hide_index=True, key=f"{key}-scores")
        right.button("More like this", key=f"{key}-like", on_click=_more_like, args=(int(image_id),),
                     help="Search the index with this image (Similarity page)")
        if right.button("Close", key=f"{key}-close"):
            st.session_state.pop(key, None)
            st.rerun()


def open_artist(name: str) -> None:
    """Button callback: show this artist on the Artist page (its search box filled in)."""
    st.session_state["art-search"] = name
    st.session_state["page"] = "Artist"


def _more_like(image_id: int) -> None:
    st.session_state["sim-like"] = image_id
    st.session_state["page"] = "Similarity"


def _png_parameters(path: Path | None) -> str:
    """The A1111-style `parameters` text of an image, if any: a PNG's text chunk, or the EXIF
    UserComment A1111 writes into JPEG and WebP (imported originals keep their own)."""
    if path is None:
        return ""
    from PIL import Image

    from evaluator.generation.pngmeta import read_text_chunks

    try:
        with Image.open(path) as image:
            return str(read_text_chunks(image).get("parameters", ""))
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""


# The Gallery page lives in dashboard/gallery.py.


# ------------------------------------------------------------------ Curated images (atelier curate)

CURATED_COLUMNS = ["path", "flags", "artist_id", "width", "height", "megapixels", "aesthetic", "watermark_prob",
                   "sd_mark", "sd_mark_agreement", "outlier_z", "duplicate_of_path", "error", "source"]
SHOWN = {"all": None, "flagged": True, "kept (no flag)": False}


def _curated_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The listing as text cells: flags joined, floats kept numeric (the table sorts them)."""
    table = frame[[c for c in CURATED_COLUMNS if c in frame.columns]].copy()
    table["flags"] = table["flags"].map(lambda flags: ", ".join(flags) if flags is not None else "")
    return table


def curated_gallery(store: q.Store) -> None:
    """Curated files sorted and filtered by resolution, aesthetic, watermark probability and flags."""
    from evaluator.curation.config import REASONS

    if not q.has_curation(store):
        return
    with st.expander("Curated images (`atelier curate`)", expanded=True):
        c1, c2, c3, c4, c5 = st.columns([3, 1, 1, 1, 1])
        flags = c1.multiselect("Flags (any of)", list(REASONS), key="cur-flags")
        shown = c2.selectbox("Show", list(SHOWN), key="cur-shown")
        sort = c3.selectbox("Sort by", list(q.CURATION_SORTS), key="cur-sort")
        order = c4.selectbox("Order", ["descending", "ascending"], key="cur-order")
        min_mp = c5.number_input("Min megapixels", min_value=0.0, value=0.0, step=0.25, key="cur-min-mp")
        filt = q.CurationFilter(tuple(flags), SHOWN[shown], min_megapixels=float(min_mp), sort=sort,
                                descending=order == "descending")
        frame, total = q.curated_files(store, filt, limit=200)
        st.caption(f"{total:,} curated files match" + (" (first 200 shown)" if total > 200 else ""))
        if frame.empty:
            return
        st.dataframe(_curated_table(frame), hide_index=True, key="cur-table")
        thumbs = frame[frame["thumb_path"].notna()].head(12)
        cols = st.columns(6)
        for i, row in enumerate(thumbs.itertuples(index=False)):
            _show_image(cols[i % 6], store.workdir, row.thumb_path, ", ".join(row.flags) or "no flag")


def artist_flagged(store: q.Store, artist_id: str) -> None:
    """The artist's files that `atelier curate` flagged, with why."""
    if not q.has_curation(store):
        return
    frame, total = q.curated_files(store, q.CurationFilter(flagged=True, artist_id=artist_id, sort="path",
                                                           descending=False), limit=200)
    st.subheader(f"Flagged images ({total:,})")
    if frame.empty:
        st.caption("none flagged by `atelier curate`")
    else:
        st.dataframe(_curated_table(frame), hide_index=True, key="art-flagged")


# ------------------------------------------------------------------ Artist

def page_artist(store: q.Store, model: str) -> None:
    st.header("Artist")
    defaults = {} if "art-search" in st.session_state else {"value": st.query_params.get("artist", "")}
    text = st.text_input("Find an artist", key="art-search", **defaults)
    matches = q.artist_search(store, text or "", limit=200)
    if matches.empty:
        st.info("No artist matches.")
        return
    labels = {r.artist_id: f"{r.name} ({r.artist_id})" for r in matches.itertuples(index=False)}
    artist_id = st.selectbox("Artist", list(labels), format_func=labels.get, key="art-id")
    info = q.artist_info(store, artist_id)
    if info.empty:
        return
    a = info.iloc[0]
    def year(value) -> str:
        return str(int(value)) if pd.notna(value) else "?"

    living = bool(a["living"]) if pd.notna(a["living"]) else False
    years = f"({year(a['born'])}–{'' if living else year(a['died'])})" if pd.notna(a["born"]) or pd.notna(a["died"]) else ""
    st.subheader(f"{md_text(a['name'])} {years}")
    def field(name: str) -> str:  # catalog text, shown as text (a cell may hold Markdown or HTML)
        return md_text(a[name]) if pd.notna(a[name]) and a[name] else "—"

    st.markdown(
        f"**Movements:** {field('movements')} · **Mediums:** {field('mediums')} · **Tags:** {field('tags')}  \n"
        f"**Nationality:** {field('nationality')} · **Recognized (SDXL / SD1 labels):** "
        f"{field('recognized_sdxl')} / {field('recognized_sd1')} · **Sources:** {field('sources')}"
    )

    if model:
        scores = q.artist_scores_of(store, artist_id, model)
        st.subheader("Scores per checkpoint")
        if scores.empty:
            st.caption("not scored")
        else:
            table = scores.pivot(index="metric", columns="checkpoint", values="value")
            st.dataframe(table, key="art-scores")
        comparisons = q.artist_comparisons_of(store, artist_id, model)
        if not comparisons.empty:
            st.caption("Against the base")
            st.dataframe(comparisons, hide_index=True, key="art-cmp")
        neighbors = q.artist_neighbors_of(store, artist_id, model)
        st.subheader("Nearest artists per checkpoint")
        if neighbors.empty:
            st.caption("no neighbours computed")
        else:
            neighbors["label"] = neighbors["neighbor"].fillna(neighbors["neighbor_id"]) + " (" + neighbors["similarity"].map(_fmt) + ")"
            st.dataframe(neighbors.pivot(index="rank", columns="checkpoint", values="label"), key="art-nb")

    refs = q.artist_references(store, artist_id)
    st.subheader(f"Reference works ({len(refs)})")
    if refs.empty:
        st.caption("none supplied (`atelier references`)")
    else:
        cols = st.columns(6)
        for i, ref in enumerate(refs.itertuples(index=False)):
            _show_image(cols[i % 6], store.workdir, ref.thumb_path or ref.path, "reference")

    artist_flagged(store, artist_id)

    count = q.artist_image_count(store, artist_id)
    per_page = 24
    pages = max(1, math.ceil(count / per_page))
    st.subheader(f"Images ({count:,})")
    if st.session_state.get("art-image") is not None:
        show_image_detail(store, st.session_state["art-image"], "art-image")
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="art-page")
    images = q.artist_images(store, artist_id, per_page, (int(page) - 1) * per_page)
    cols = st.columns(6)
    for i, image in enumerate(images.itertuples(index=False)):
        col = cols[i % 6]
        if isinstance(image.error, str):
            col.caption(f"{md_text(image.checkpoint)} · failed: {md_text(image.error[:60])}")
            continue
        _show_image(col, store.workdir, image.thumb_path, f"{image.checkpoint} · {image.template} · seed {image.seed}")
        if col.button("View", key=f"art-view-{image.image_id}"):
            st.session_state["art-image"] = int(image.image_id)
            st.rerun()


# ------------------------------------------------------------------ Similarity

@st.cache_data(show_spinner="Searching (the CLIP model loads in a child process)…", max_entries=64)
def _search_hits(workdir: str, model: str, spec: str, *, text: str, image_bytes: bytes | None, k: int,
                 index_stamp: float, image_id: int | None = None) -> pd.DataFrame:
    """(image_id, similarity) of a query; cached per query and version of the index file."""
    query = search.SearchQuery(Path(workdir), model, spec, text=text, image_bytes=image_bytes, k=k, image_id=image_id)
    return pd.DataFrame(search.run_search(query)["images"], columns=["image_id", "similarity"])


def similarity_search(store: q.Store, model: str, spec: str, text: str = "", image_bytes: bytes | None = None,
                      k: int = 48, image_id: int | None = None):
    """(image hits, artist hits) for a text or an image, by the evaluator's FAISS index."""
    index_path = store.wd.index(model)
    if not index_path.is_file():
        raise FileNotFoundError(f"no FAISS index for model {model!r} at {index_path}; run `atelier index` or `atelier score`")
    hits = _search_hits(str(store.workdir), model, spec, text=text, image_bytes=image_bytes, k=k,
                        index_stamp=index_path.stat().st_mtime, image_id=image_id)
    rows = q.images_by_ids(store, hits.image_id.tolist()).merge(hits, on="image_id").sort_values("similarity", ascending=False)
    artists = (rows.groupby(["artist_id", "name"], dropna=False)["similarity"].agg(["max", "mean", "count"])
               .reset_index().sort_values("max", ascending=False))
    return rows, artists


def _default_clip_spec(store: q.Store, model: str) -> str:
    """The CLIP the scores were made with: the score run's config, else the model key."""
    runs = q.score_runs(store)
    for settings in runs.get("settings", []):
        try:
            config = json.loads(settings or "{}")
        except (TypeError, ValueError):
            continue
        for key in ("model_spec", "model", "clip"):
            if isinstance(config.get(key), str) and config[key]:
                return config[key]
    return model


# The Similarity page lives in dashboard/similarity.py.


# ------------------------------------------------------------------ SQL

def page_sql(store: q.Store, model: str) -> None:
    st.header("SQL")
    st.caption("Read-only: one SELECT / WITH / DESCRIBE / SHOW / EXPLAIN statement; no file outside the store "
               "can be read. Tables: artists, templates, checkpoints, runs, images, image_scores, artist_scores, "
               "checkpoint_scores, artist_neighbors, comparisons, reference_images.")
    example = st.selectbox("Example queries", list(q.EXAMPLE_QUERIES), key="sql-example")
    if st.session_state.get("sql-last-example") != example:
        st.session_state["sql-last-example"] = example
        st.session_state["sql-text"] = q.EXAMPLE_QUERIES[example]
    sql = st.text_area("Query", key="sql-text", height=160)
    row_limit, time_limit = sql_limits()
    q.keep_spare_worker()  # a worker starts while the query is typed, not after Run
    if st.button("Run", key="sql-run", type="primary"):
        st.session_state.pop("sql-result", None)
        try:
            result = q.run_user_sql(store, sql, row_limit=row_limit, time_limit=time_limit)
        except q.UnsafeQueryError as exc:
            st.error(f"Refused: {md_text(exc)}")
            return
        except TimeoutError as exc:
            st.error(md_text(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a SQL error is the user's to read
            st.error(f"Query failed: {md_text(exc)}")
            return
        st.session_state["sql-result"] = (sql, result)
    shown = st.session_state.get("sql-result")
    if shown is None or shown[0] != sql:  # nothing run yet, or the query was edited since
        return
    result = shown[1]
    note = f"{len(result.frame):,} rows in {result.seconds:.2f} s"
    if result.truncated:
        note += f" — truncated at the row limit of {result.row_limit:,}"
    st.caption(note)
    st.dataframe(result.frame, hide_index=True, key="sql-result-table")
    _sql_downloads(result.frame)


def sql_limits() -> tuple[int, float]:
    """The row and time limits of this run: the widgets may only lower the server's limits.

    The server's limits are ``evaluator.workspace.queries.SQL_ROW_LIMIT`` / ``SQL_TIME_LIMIT``:
    a visitor's widget value above them (or a crafted session value) is capped, not obeyed.
    """
    c1, c2 = st.columns(2)
    rows = c1.number_input(f"Row limit (at most {q.SQL_ROW_LIMIT:,})", min_value=1, max_value=q.SQL_ROW_LIMIT,
                           value=q.SQL_ROW_LIMIT, key="sql-rows")
    seconds = c2.number_input(f"Time limit (s, at most {q.SQL_TIME_LIMIT:g})", min_value=0.1,
                              max_value=float(q.SQL_TIME_LIMIT), value=float(q.SQL_TIME_LIMIT), key="sql-time")
    row_limit = min(max(int(rows or 1), 1), q.SQL_ROW_LIMIT)
    time_limit = float(seconds) if seconds and math.isfinite(float(seconds)) else q.SQL_TIME_LIMIT
    return row_limit, min(max(time_limit, 0.1), q.SQL_TIME_LIMIT)


def _sql_downloads(frame: pd.DataFrame) -> None:
    """CSV / Parquet bytes are built only when asked: a button, then the download (not per result)."""
    c1, c2 = st.columns(2)
    if c1.button("Prepare CSV download", key="sql-csv-make"):
        c1.download_button("Download CSV", q.csv_bytes(frame), file_name="atelier-query.csv", mime="text/csv",
                           key="sql-csv", on_click="ignore")
    if c2.button("Prepare Parquet download", key="sql-parquet-make"):
        c2.download_button("Download Parquet", q.parquet_bytes(frame), file_name="atelier-query.parquet",
                           mime="application/octet-stream", key="sql-parquet", on_click="ignore")


# ------------------------------------------------------------------ Runs

def page_runs(store: q.Store, model: str) -> None:
    st.header("Runs")
    runs = q.runs(store)
    if runs.empty:
        st.info("No runs recorded yet.")
    else:
        cols = st.columns(4)
        cols[0].metric("Runs", len(runs))
        cols[1].metric("Generation runs", int((runs.kind == "generate").sum()))
        cols[2].metric("Scoring runs", int((runs.kind == "score").sum()))
        cols[3].metric("Not finished", int(runs.finished_at.isna().sum()))
        st.dataframe(runs, hide_index=True, key="runs-table")
    st.subheader("Progress per run and checkpoint")
    progress = q.run_progress(store)
    st.dataframe(progress, hide_index=True, key="runs-progress")
    if not progress.empty:
        bars = progress.assign(ok=progress.images - progress.failed).melt(
            id_vars=["run_id", "checkpoint"], value_vars=["ok", "failed"], var_name="state", value_name="n")
        st.altair_chart(alt.Chart(bars).mark_bar().encode(
            x="n:Q", y=alt.Y("run_id:N"), color=alt.Color("state:N", scale=alt.Scale(domain=["ok", "failed"], range=["#5c6bc0", "#c62828"])),
            tooltip=["run_id", "checkpoint", "state", "n"]), width="stretch")
    if model:
        scored = q.scored_per_checkpoint(store, model)
        if not scored.empty:
            made = progress.groupby("checkpoint", as_index=False).agg(images=("images", "sum"), failed=("failed", "sum"))
            scored = made.merge(scored, on="checkpoint", how="outer").fillna(0)
            st.caption(f"Scored images per checkpoint (model {md_text(model)})")
            st.dataframe(scored, hide_index=True, key="runs-scored")
    embed_errors = q.embedding_errors(store)
    if not embed_errors.empty:
        st.subheader(f"Images the embedder could not read ({len(embed_errors)})")
        st.dataframe(embed_errors, hide_index=True, key="runs-embed-errors")
    st.subheader("Images with errors")
    first, total = q.error_images(store, 1, 0)
    if total == 0:
        st.success("No failed image.")
        return
    per_page = 100
    pages = max(1, math.ceil(total / per_page))
    page = st.number_input(f"Page (of {pages}; {total:,} failed images)", min_value=1, max_value=pages, value=1, key="runs-page")
    errors, _ = q.error_images(store, per_page, (int(page) - 1) * per_page)
    st.dataframe(errors, hide_index=True, key="runs-errors")
