"""The Similarity page: nearest images to a text or an image, and which artists look alike.

Reads the store through ``dashboard.queries`` and, for the full artist x artist matrix and
the map, the workdir's embedding parts (numpy and pyarrow only; searches still run in a
child process, so torch never loads here). The stored ``artist_neighbors`` keep only each
artist's top k, which leaves holes in a matrix; the centroids of the artists' images
give every cell. Rows are ordered by spectral seriation (the Fiedler vector of the
similarity graph), so alike artists sit together and blocks show as blocks.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import queries as q
from dashboard.report import md_text
from dashboard.views import (
    _default_clip_spec,
    _show_image,
    artist_filter_widgets,
    open_artist,
    similarity_search,
)

MATRIX_ARTISTS = 30  # a readable matrix; the map shows every artist
MAP_ARTISTS = 3000  # most centroids projected on the map


def page_similarity(store: q.Store, model: str) -> None:
    st.header("Similarity")
    if not model:
        st.info("No scores yet.")
        return
    _search_section(store, model)
    st.subheader("Artists a checkpoint renders alike")
    checkpoints = q.neighbor_checkpoints(store, model)
    if not checkpoints:
        st.caption("no neighbours computed")
        return
    checkpoint = st.selectbox("Checkpoint", checkpoints, key="sim-ckpt")
    filt = artist_filter_widgets(store, "sim", model, checkpoint)
    pairs = q.top_similar_pairs(store, checkpoint, model, filt, limit=200)
    st.dataframe(pairs, hide_index=True, key="sim-pairs",
                 column_config={"similarity": st.column_config.NumberColumn(format="%.4f")})
    ids = _matrix_artists(store, checkpoint, model, filt)
    if ids:
        _matrix_section(store, checkpoint, model, ids)
    _map_section(store, checkpoint, model)


# ------------------------------------------------------------------ search

def _search_section(store: q.Store, model: str) -> None:
    st.subheader("Nearest images and artists to a text or an image")
    with st.form("sim-form", border=False):  # Enter in the text field searches
        c1, c2 = st.columns(2)
        text = c1.text_input("Text", key="sim-text", placeholder="a stormy sea in thick impasto")
        upload = c2.file_uploader("…or an image", type=["png", "jpg", "jpeg", "webp"], key="sim-upload")
        spec = st.text_input("CLIP model (name or folder) used to embed the query",
                             value=_default_clip_spec(store, model), key="sim-spec")
        submitted = st.form_submit_button("Search", key="sim-go")
    like = st.session_state.get("sim-like")
    if submitted and (text or upload is not None):
        st.session_state.pop("sim-like", None)
        _show_hits(store, model, spec, text=text, image_bytes=upload.getvalue() if upload else None)
    elif like is not None:
        st.caption(f"More like image {like}")
        _show_hits(store, model, spec, image_id=int(like))


def _show_hits(store: q.Store, model: str, spec: str, **query) -> None:
    try:
        rows, artists = similarity_search(store, model, spec, **query)
    except Exception as exc:  # noqa: BLE001 - a failed search is a message, not a crash
        st.error(f"Search failed: {md_text(exc)}")
        return
    st.markdown("**Nearest artists** (by their images among the hits)")
    st.dataframe(artists, hide_index=True, key="sim-artists")
    cols = st.columns(6)
    for i, hit in enumerate(rows.head(24).itertuples(index=False)):
        col = cols[i % 6]
        _show_image(col, store.workdir, hit.thumb_path, f"{hit.name or hit.artist_id} · {hit.checkpoint} · {hit.similarity:.3f}")
        col.button("More like this", key=f"sim-like-{hit.image_id}", on_click=_search_like, args=(int(hit.image_id),))


def _search_like(image_id: int) -> None:
    st.session_state["sim-like"] = image_id


# ------------------------------------------------------------------ matrix

def _matrix_artists(store: q.Store, checkpoint: str, model: str, filt: q.ArtistFilter) -> list[str]:
    """The matrix's artists: one artist and its nearest neighbours, or the filtered artists."""
    st.markdown("**Artist × artist similarity** (cosine of the artists' mean image embeddings)")
    mode = st.radio("Artists", ["Around one artist", "The filtered artists"], horizontal=True, key="sim-mode")
    if mode == "The filtered artists":
        return q.gallery_artists(store, filt, MATRIX_ARTISTS, 0)[0].artist_id.tolist()
    text = st.text_input("Artist", key="sim-artist-search")
    matches = q.artist_search(store, text or "", limit=100)
    if matches.empty:
        st.caption("no artist matches")
        return []
    labels = dict(zip(matches.artist_id, matches.name, strict=True))
    center = st.selectbox("Center artist", list(labels), format_func=labels.get, key="sim-center")
    near = q.artist_neighbors_of(store, center, model)
    near = near[near.checkpoint == checkpoint]
    return [center, *near.neighbor_id.tolist()]


@st.cache_data(max_entries=32, show_spinner=False)
def _centroids(workdir: str, model: str, checkpoint: str, artist_ids: tuple[str, ...],
               rows: pd.DataFrame, stamp: float) -> tuple[list[str], np.ndarray]:
    """Unit mean embedding of each artist's images of the checkpoint (artists without any are left out)."""
    from evaluator.embedding.images import load_embeddings
    from evaluator.workspace.workdir import Workdir

    ids, vecs = load_embeddings(Workdir(Path(workdir)), model, ids=rows.image_id.tolist())
    artist_of = dict(zip(rows.image_id, rows.artist_id, strict=True))
    frame = pd.DataFrame(vecs, index=[artist_of[int(i)] for i in ids])
    means = frame.groupby(level=0).mean().reindex([a for a in artist_ids if a in frame.index])
    unit = means.to_numpy(dtype=np.float64, copy=True)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    return means.index.tolist(), unit


def seriate(similarity: np.ndarray) -> np.ndarray:
    """An order of the rows that puts alike rows together: the Fiedler vector of the graph
    whose weights are the (shifted, non-negative) similarities."""
    n = len(similarity)
    if n < 3:
        return np.arange(n)
    weights = similarity - similarity.min()
    np.fill_diagonal(weights, 0.0)
    laplacian = np.diag(weights.sum(axis=1)) - weights
    _, vectors = np.linalg.eigh(laplacian)
    return np.argsort(vectors[:, 1], kind="stable")


def _embedding_stamp(store: q.Store, model: str) -> float | None:
    folder = store.wd.embeddings(model)
    parts = list(folder.glob("part-*.parquet")) if folder.is_dir() else []
    return max((p.stat().st_mtime for p in parts), default=None)


def _matrix_section(store: q.Store, checkpoint: str, model: str, ids: list[str]) -> None:
    stamp = _embedding_stamp(store, model)
    if stamp is None:
        st.caption(f"no embeddings of {md_text(model)} in this workdir: only the stored nearest pairs are known "
                   "(run `atelier score` to embed the images)")
        _neighbour_matrix(store, checkpoint, model, ids)
        return
    rows = q.checkpoint_artist_images(store, checkpoint, ids)
    names_of = q.artist_names(store, ids).set_index("artist_id")["name"].to_dict()
    artists, unit = _centroids(str(store.workdir), model, checkpoint, tuple(ids), rows, stamp)
    if len(artists) < 2:
        st.caption("fewer than two of these artists have embedded images of this checkpoint")
        return
    similarity = unit @ unit.T
    order = seriate(similarity)
    labels = [names_of.get(artists[i], artists[i]) for i in order]
    ordered = pd.DataFrame(similarity[np.ix_(order, order)], index=labels, columns=labels)
    ordered.index.name = "artist"
    long = ordered.reset_index().melt(id_vars="artist", var_name="neighbor", value_name="similarity")
    heat = alt.Chart(long).mark_rect().encode(
        x=alt.X("neighbor:N", sort=labels, title=None), y=alt.Y("artist:N", sort=labels, title=None),
        color=alt.Color("similarity:Q", scale=alt.Scale(scheme="viridis")),
        tooltip=["artist", "neighbor", alt.Tooltip("similarity:Q", format=".4f")],
    ).properties(height=alt.Step(18))
    st.altair_chart(heat, width="stretch")
    st.dataframe(ordered, key="sim-matrix", column_config={c: st.column_config.NumberColumn(format="%.4f") for c in labels})


def _neighbour_matrix(store: q.Store, checkpoint: str, model: str, ids: list[str]) -> None:
    """The stored top-k pairs only (cells outside anyone's top k stay blank)."""
    matrix = q.similarity_matrix(store, checkpoint, model, ids)
    if matrix.empty:
        st.caption("no similarities among these artists")
        return
    order = q.artist_names(store, ids).set_index("artist_id").reindex(ids)["name"].dropna().tolist()
    heat = alt.Chart(matrix).mark_rect().encode(
        x=alt.X("neighbor:N", sort=order), y=alt.Y("artist:N", sort=order),
        color=alt.Color("similarity:Q", scale=alt.Scale(scheme="viridis")),
        tooltip=["artist", "neighbor", alt.Tooltip("similarity:Q", format=".4f")])
    st.altair_chart(heat, width="stretch")
    st.dataframe(matrix.pivot_table(index="artist", columns="neighbor", values="similarity"), key="sim-matrix")


# ------------------------------------------------------------------ map

def _map_section(store: q.Store, checkpoint: str, model: str) -> None:
    """Every artist's centroid projected on its first two principal components; click one to open it."""
    stamp = _embedding_stamp(store, model)
    if stamp is None:
        return
    ids = q.gallery_artists(store, q.ArtistFilter(), MAP_ARTISTS, 0)[0].artist_id.tolist()
    rows = q.checkpoint_artist_images(store, checkpoint, ids)
    artists, unit = _centroids(str(store.workdir), model, checkpoint, tuple(ids), rows, stamp)
    if len(artists) < 3:
        return
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    names = q.artist_names(store, artists).set_index("artist_id")["name"].to_dict()
    points = pd.DataFrame({"artist_id": artists, "name": [names.get(a, a) for a in artists],
                           "pc1": xy[:, 0], "pc2": xy[:, 1]})
    st.markdown(f"**Map of {len(points):,} artists** ({md_text(checkpoint)}: the first two principal components "
                "of their mean image embeddings; click a point to open the artist)")
    pick = alt.selection_point(fields=["artist_id"], name="artist")
    chart = alt.Chart(points).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X("pc1:Q", title="PC 1"), y=alt.Y("pc2:Q", title="PC 2"), tooltip=["name", "artist_id"],
        color=alt.condition(pick, alt.value("#c62828"), alt.value("#607d8b"))).add_params(pick)
    event = st.altair_chart(chart, width="stretch", on_select="rerun", key="sim-map")
    chosen = (event or {}).get("selection", {}).get("artist", []) if isinstance(event, dict) else []
    if chosen:
        artist_id = chosen[0].get("artist_id")
        name = names.get(artist_id, artist_id)
        st.button(f"Open {name} on the Artist page", key="sim-map-open", on_click=open_artist, args=(name,))
