"""The Gallery page: one prompt and seed per artist, side by side across checkpoints.

Reads the store through ``dashboard.queries``. A row per artist and a column per
checkpoint, with the no-artist baseline as the first row (what the checkpoint draws for
the same seed with no artist named: the style an artist adds is the difference), an
optional strip of every seed in each cell (one seed can mislead), artists ordered by
name or by their change between two checkpoints, and the full image opening under the
row that was clicked, where the user is looking.
"""

from __future__ import annotations

import dataclasses
import math

import streamlit as st

from dashboard import queries as q
from dashboard.report import md_text
from dashboard.views import _show_image, artist_filter_widgets, curated_gallery, show_image_detail

STRIP_SEEDS = 4  # seeds shown per cell in the seed strip
# Columns shown before the user picks: side by side, more than a few checkpoints are too
# narrow to compare, and a store of 70 checkpoints drew 840 cells (1.35 s a page).
DEFAULT_CHECKPOINTS = 4
ORDERS = ["name", "largest loss first", "largest gain first"]
# A cell's one image is shown this wide: thumbnails are 64 px or less (the world demo's 32),
# too small to tell styles apart at their own size, and four columns leave ~200 px each.
CELL_PX = 96


@dataclasses.dataclass(frozen=True)
class GridChoice:
    """What the grid shows: one template, the seeds per cell, the checkpoints (columns)."""

    template: str
    seeds: list[int]
    checkpoints: list[str]


def page_gallery(store: q.Store, model: str) -> None:
    st.header("Gallery")
    curated_gallery(store)
    templates, seeds = q.templates_and_seeds(store)
    checkpoints = q.checkpoint_names(store)
    if not templates or not seeds:
        st.info("No generated images yet: run `atelier generate`.")
        return
    choice, page_size, order = _grid_widgets(templates, seeds, checkpoints)
    filt = artist_filter_widgets(store, "gal", model, choice.checkpoints[0])
    filt = _carried_filter(filt)
    first = q.gallery_artists(store, filt, 1, 0)[1]
    pages = max(1, math.ceil(first / page_size))
    page = st.number_input(f"Page (of {pages}; {first:,} artists)", min_value=1, max_value=pages, key="gal-page")
    delta_of = _delta_order(store, model, choice.checkpoints, order)
    artists, _ = q.gallery_artists(store, filt, page_size, (int(page) - 1) * page_size, delta_of=delta_of)
    if artists.empty:
        st.info("No artist matches the filters.")
        return
    shown = _grid(store, artists, choice)
    st.caption(f"{shown} thumbnails · template {md_text(choice.template)} · seed "
               f"{', '.join(map(str, choice.seeds))} · page {page} of {pages}")


def _grid_widgets(templates: list[str], seeds: list[int], checkpoints: list[str]) -> tuple[GridChoice, int, str]:
    c1, c2, c3, c4 = st.columns([1, 1, 3, 1])
    template = c1.selectbox("Template", templates, key="gal-template")
    seed = c2.selectbox("Seed", seeds, key="gal-seed")
    # A default only when nothing set the choice already (Compare's "Gallery" links do).
    first = checkpoints[:DEFAULT_CHECKPOINTS]
    defaults = {} if "gal-ckpts" in st.session_state else {"default": first}
    chosen = c3.multiselect("Checkpoints", checkpoints, key="gal-ckpts", **defaults) or first
    if len(checkpoints) > len(chosen):
        c3.caption(f"{len(chosen)} of {len(checkpoints)} checkpoints shown; add others above.")
    page_size = c4.selectbox("Artists per page", [6, 12, 24], index=1, key="gal-size")
    c5, c6 = st.columns([1, 2])
    strip = c5.toggle(f"Seed strip (first {STRIP_SEEDS} seeds per cell)", key="gal-strip")
    order = c6.selectbox("Order artists by", ORDERS, key="gal-order",
                         help="The change of the first two checkpoints shown (base first).")
    cell_seeds = seeds[:STRIP_SEEDS] if strip else [seed]
    return GridChoice(template, cell_seeds, chosen), page_size, order


def _carried_filter(filt: q.ArtistFilter) -> q.ArtistFilter:
    carried = st.session_state.get("gal-artist-ids")
    if not carried:
        return filt
    note, clear = st.columns([5, 1])
    note.info(f"Showing the {len(carried):,} artists opened from Compare.")
    clear.button("Show all artists", key="gal-clear-carried", on_click=lambda: st.session_state.pop("gal-artist-ids", None))
    return dataclasses.replace(filt, artist_ids=tuple(carried))


def _delta_order(store: q.Store, model: str, checkpoints: list[str], order: str) -> tuple | None:
    """(base, finetune, model, metric, descending) to order artists by, when a comparison exists."""
    if order == "name" or len(checkpoints) < 2:
        if order != "name":
            st.caption("Ordering by change needs two checkpoints in the grid.")
        return None
    pairs = q.comparison_pairs(store)
    pairs = pairs[(pairs.base == checkpoints[0]) & (pairs.finetune == checkpoints[1]) & (pairs.model == model)]
    if pairs.empty:
        st.caption(f"No comparison of {md_text(checkpoints[1])} with {md_text(checkpoints[0])}: ordered by name.")
        return None
    from evaluator.demo.summary import headline_metric

    metric = headline_metric(set(pairs.metric))
    gain_first = order == "largest gain first"
    descending = gain_first != q.lower_is_better(metric)
    st.caption(f"Ordered by Δ {md_text(metric)} of {md_text(checkpoints[1])} vs {md_text(checkpoints[0])}.")
    return checkpoints[0], checkpoints[1], model, metric, descending


def _grid(store: q.Store, artists, choice: GridChoice) -> int:
    """The rows (baseline first), each followed by the detail of its image when clicked."""
    header = st.columns([1] + [1] * len(choice.checkpoints))
    header[0].markdown("**artist**")
    for col, name in zip(header[1:], choice.checkpoints, strict=True):
        col.markdown(f"**{md_text(name)}**")
    images = q.gallery_cells(store, ["_baseline", *artists.artist_id.tolist()], choice.template, choice.seeds,
                             choice.checkpoints)
    by_cell: dict[tuple[str, str], list] = {}
    for row in images.itertuples(index=False):
        by_cell.setdefault((row.artist_id, row.checkpoint), []).append(row)
    rows = [("_baseline", "baseline (no artist)", "same seed, no artist named")]
    rows += [(a.artist_id, a.name, a.artist_id) for a in artists.itertuples(index=False)]
    shown = 0
    opened = st.session_state.get("gal-image")
    for artist_id, title, subtitle in rows:
        cols = st.columns([1] + [1] * len(choice.checkpoints))
        cols[0].markdown(f"{md_text(title)}  \n{md_text(subtitle)}")
        ids_in_row = []
        for col, checkpoint in zip(cols[1:], choice.checkpoints, strict=True):
            cells = by_cell.get((artist_id, checkpoint), [])
            shown += _cell(store, col, cells)
            ids_in_row += [int(c.image_id) for c in cells]
        if opened is not None and opened in ids_in_row:
            show_image_detail(store, opened, "gal-image")  # under the row the user clicked
    return shown


def _cell(store: q.Store, col, cells: list) -> int:
    if not cells:
        col.caption("—")
        return 0
    shown = 0
    inner = col.columns(len(cells)) if len(cells) > 1 else [col]
    for slot, cell in zip(inner, cells, strict=True):
        if cell.error is not None and not isinstance(cell.error, float):
            slot.caption(f"failed: {md_text(cell.error[:60])}")
            continue
        caption = f"seed {cell.seed}" if len(cells) > 1 else None
        width = CELL_PX if len(cells) == 1 else "stretch"
        if _show_image(slot, store.workdir, cell.thumb_path, caption, width=width):
            shown += 1
        slot.button("View", key=f"gal-view-{cell.image_id}", on_click=_open, args=(int(cell.image_id),))
    return shown


def _open(image_id: int) -> None:
    st.session_state["gal-image"] = image_id
