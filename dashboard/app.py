"""The atelier dashboard (Streamlit): `atelier dashboard --workdir DIR`, or
`streamlit run dashboard/app.py -- --workdir DIR`, or with ``ATELIER_WORKDIR`` set.

Pages: Leaderboard, Compare, Gallery, Artist, Similarity, SQL, Runs, Training (sidebar, and
``?page=Gallery`` in the URL). Every query lives in ``dashboard/queries.py`` and runs
on a read-only connection opened and closed per query. This module never imports
torch: text and image searches run `atelier search` in a child process (dashboard.search).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

from dashboard import compare, gallery, similarity, training, views
from dashboard import queries as q
from dashboard.report import md_text

PAGES = {
    "Leaderboard": views.page_leaderboard,
    "Compare": compare.page_compare,
    "Gallery": gallery.page_gallery,
    "Artist": views.page_artist,
    "Similarity": similarity.page_similarity,
    "SQL": views.page_sql,
    "Runs": views.page_runs,
    "Training": training.page_training,
}


def main() -> None:
    st.set_page_config(page_title="atelier", page_icon="🎨", layout="wide")
    workdir = q.workdir_from_args(sys.argv[1:], dict(os.environ))
    st.sidebar.title("atelier")
    if not workdir:
        st.error("No workdir: start with `atelier dashboard --workdir DIR` or set ATELIER_WORKDIR.")
        return
    root = Path(workdir).expanduser().resolve()
    if not (root / "atelier.duckdb").is_file():
        st.error(
            f"No store at {root / 'atelier.duckdb'}. Run `atelier demo --workdir {root}` or the "
            "pipeline (`atelier generate`, `atelier score`) first."
        )
        return
    store = q.Store(root, lock_timeout=q.lock_timeout_from_env())

    names = list(PAGES)
    if "page" not in st.session_state:
        wanted = st.query_params.get("page", names[0])
        st.session_state["page"] = wanted if wanted in PAGES else names[0]
    page = st.sidebar.radio("Page", names, key="page")
    st.query_params["page"] = page

    notices = st.empty()
    try:
        with store.session():  # one connection for this run, closed before the next
            behind = store.schema_behind()
            if behind is not None:
                st.error(f"This store has schema version {behind}, older than this atelier reads. "
                         f"Update it in place (keeps every row): `atelier migrate --workdir {root}`")
                return
            model = views.sidebar_model(store)
            PAGES[page](store, model)
    except q.StoreBusyError as exc:
        st.warning(md_text(exc))
    except FileNotFoundError as exc:  # may name a stored model or path: shown as text
        st.error(md_text(exc))
    stale = q.take_notices()
    if stale:
        notices.warning(md_text(" ".join(stale)))
    st.sidebar.caption(f"workdir: `{root}`")


main()
