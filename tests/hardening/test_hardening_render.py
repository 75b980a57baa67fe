"""Hostile stored text on every dashboard page and in the report; the SQL page's limits.

Issue 12, cases 6 and 2 (dashboard part). A catalog cell, a PNG `parameters` chunk, a
prompt, an image error or a score reason may hold Markdown or HTML chosen by whoever
wrote the catalog or the image: the dashboard must show it as text (no <img>, no link, no
Streamlit directive), the Markdown report must carry no raw tag or link. A visitor of the
SQL page can only lower the server's row and time limits, and download bytes are built
only when asked.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import duckdb
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from support.store import build_store

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
PAGES = ["Leaderboard", "Compare", "Gallery", "Artist", "Similarity", "Runs", "SQL"]  # SQL last: used after
EVIL = ('![x](http://evil.example/t.png) <img src="http://evil.example/i.png"> [l](http://evil.example/l) '
        "www.evil.example :red[x] <script>alert(1)</script> **b** `c` $x$")
ARTIST = "claude-monet"  # an artist of the synthetic store (it has reference works)
# Text elements, headings, alerts: their body is Markdown. Widget labels and image captions too.
MARKDOWN_TYPES = {"markdown", "caption", "latex", "title", "header", "subheader", "error", "warning", "info",
                  "success", "toast"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-render")
    build_store(root, n_artists=8, n_templates=1, n_seeds=2, n_checkpoints=2, with_images=True, error_rate=0.0)
    _plant(root)
    return root


def _plant(root: Path) -> None:
    """Hostile text in the catalog, an image's error and prompt, a PNG chunk and a score reason."""
    from PIL import Image, PngImagePlugin

    con = duckdb.connect(str(root / "atelier.duckdb"))
    try:
        con.execute("UPDATE artists SET name = ?, movements = ?, mediums = ?, tags = ?, nationality = ?, "
                    "sources = ?, notes = ? WHERE artist_id = ?", [f"Claude {EVIL}", EVIL, EVIL, EVIL, EVIL, EVIL, EVIL, ARTIST])
        ids = [r[0] for r in con.execute(  # both in the gallery's first view: first seed, two checkpoints
            "SELECT image_id FROM images WHERE artist_id = ? AND error IS NULL AND checkpoint IS NOT NULL "
            "ORDER BY seed, checkpoint", [ARTIST]).fetchall()]
        con.execute("UPDATE images SET error = ? WHERE image_id = ?", [EVIL, ids[0]])
        con.execute("UPDATE images SET prompt = ?, negative_prompt = ? WHERE image_id = ?", [EVIL, EVIL, ids[1]])
        png = con.execute("SELECT path FROM images WHERE image_id = ?", [ids[1]]).fetchone()[0]
        con.execute("UPDATE checkpoint_scores SET value = NULL, reason = ? WHERE rowid = "
                    "(SELECT min(rowid) FROM checkpoint_scores)", [EVIL])
    finally:
        con.close()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", EVIL)
    with Image.open(root / png) as image:
        image.load()
        image.save(root / png, format="PNG", pnginfo=info)


def open_page(workdir: Path, page: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("ATELIER_WORKDIR", str(workdir))
    monkeypatch.delenv("ATELIER_DASHBOARD_LOCK_TIMEOUT", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_sources(at: AppTest) -> list[str]:
    """Every string the browser renders as Markdown on this run of the page."""
    found: list[str] = []
    for node in at:
        if node.type in MARKDOWN_TYPES and isinstance(getattr(node, "value", None), str):
            found.append(node.value)
        if node.type == "image":
            found.extend(c for c in node.captions if c)
        label = getattr(node, "label", None)
        if isinstance(label, str):
            found.append(label)
    return found


RENDER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def assert_inert(sources: list[str]) -> None:
    """No source makes an image, a link, a tag, an autolink or a Streamlit directive."""
    for source in sources:
        rendered = RENDER.render(source)
        assert "<img" not in rendered and "<a " not in rendered and "<script" not in rendered, (source, rendered)
        assert "![" not in source and "<img" not in source and "<script" not in source, source
        assert not re.search(r"(?<!\\)://", source), source  # a GFM autolink (http://...)
        assert not re.search(r"(?<!\\)www\.evil", source) and not re.search(r"(?<!\\):red\[", source), source


def visible_text(sources: list[str]) -> str:
    """What a reader sees: the rendered Markdown with its tags dropped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(RENDER.render(s) for s in sources)))


def test_hostile_catalog_text_on_the_artist_page_is_shown_as_text(workdir, monkeypatch):
    at = open_page(workdir, "Artist", monkeypatch)
    at.text_input(key="art-search").input("evil").run()
    assert at.selectbox(key="art-id").value == ARTIST
    sources = markdown_sources(at)
    assert_inert(sources)
    shown = visible_text(sources)
    assert f"Claude {EVIL}" in shown  # the name, as written, in the heading
    assert shown.count(EVIL) == 6  # the name and five catalog fields, each as written
    assert f"failed: {EVIL[:60]}" in shown  # the failed image's error (its first 60 characters)
    assert not at.get("html")


def test_hostile_png_chunk_prompt_and_error_in_the_gallery_are_text(workdir, monkeypatch):
    at = open_page(workdir, "Gallery", monkeypatch)
    assert_inert(markdown_sources(at))
    assert any(f"Claude {EVIL}" in t for t in [visible_text([s]) for s in markdown_sources(at)])
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    image_id = con.execute("SELECT image_id FROM images WHERE prompt = ?", [EVIL]).fetchone()[0]
    con.close()
    view = [b for b in at.button if b.key == f"gal-view-{image_id}"]
    assert view, "the planted image is on the first gallery page"
    view[0].click().run()
    assert not at.exception
    assert_inert(markdown_sources(at))
    assert any(c.value == EVIL for c in at.code)  # the PNG's own chunk, shown verbatim as code


def test_every_page_renders_no_stored_markdown_and_sql_errors_are_text(workdir, monkeypatch):
    for page in PAGES:
        at = open_page(workdir, page, monkeypatch)
        sources = markdown_sources(at)
        assert_inert(sources)
        if page == "Leaderboard":  # the NULL's reason is shown, as text
            assert EVIL in visible_text(sources)
    at.text_area(key="sql-text").input("SELECT name FROM artists WHERE name::INTEGER = 1").run()
    at.button(key="sql-run").click().run()
    assert at.error and "Query failed" in at.error[0].value  # DuckDB's message quotes the name
    assert "evil" in at.error[0].value
    assert_inert(markdown_sources(at))


def test_markdown_report_carries_no_raw_tag_link_or_image(workdir, tmp_path):
    from dashboard.report import write_report

    html_path, md_path = write_report(workdir, tmp_path / "report.html")
    md = md_path.read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "](http" not in md and "![x]" not in md
    # every link target left is one the report made: its own plot files, or a thumbnail of the workdir
    targets = re.findall(r"\]\(([^)]*)\)", md)
    assert targets and all(t.startswith("report_files/plot-") or "thumbs/" in t for t in targets), targets
    assert all((md_path.parent / t).is_file() for t in targets)
    assert "\\!\\[x\\]" in md  # the name is there, escaped
    rendered = RENDER.render(md)
    assert "evil.example" not in " ".join(re.findall(r'(?:src|href)="([^"]*)"', rendered))
    assert "<script" not in html_path.read_text(encoding="utf-8")


def test_sql_page_limits_cannot_be_raised_and_downloads_are_built_on_request(workdir, monkeypatch):
    from dashboard import queries as q

    at = open_page(workdir, "SQL", monkeypatch)
    assert at.number_input(key="sql-rows").max == q.SQL_ROW_LIMIT
    assert at.number_input(key="sql-time").max == q.SQL_TIME_LIMIT
    at.number_input(key="sql-rows").set_value(1_000_000)
    at.number_input(key="sql-time").set_value(300.0)
    at.text_area(key="sql-text").input(f"SELECT range AS i FROM range({q.SQL_ROW_LIMIT * 3})").run()
    at.button(key="sql-run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = [d.value for d in at.dataframe if list(d.value.columns) == ["i"]]
    assert len(result) == 1 and len(result[0]) == q.SQL_ROW_LIMIT
    assert any(f"truncated at the row limit of {q.SQL_ROW_LIMIT:,}" in c.value for c in at.caption)
    # no download bytes for a result nobody asked to download
    assert not at.get("download_button")
    at.button(key="sql-csv-make").click().run()
    downloads = at.get("download_button")
    assert len(downloads) == 1 and downloads[0].proto.label == "Download CSV"
    assert [d.value for d in at.dataframe if list(d.value.columns) == ["i"]]  # the result stays on screen
    at.button(key="sql-parquet-make").click().run()
    assert [d.proto.label for d in at.get("download_button")] == ["Download Parquet"]
    at.text_area(key="sql-text").input("SELECT 1 AS j").run()  # an edited query hides the old result
    assert not [d for d in at.dataframe if list(d.value.columns) == ["i"]] and not at.get("download_button")


@pytest.mark.slow
def test_sql_page_time_limit_cannot_be_raised(workdir, monkeypatch):
    from dashboard import queries as q

    at = open_page(workdir, "SQL", monkeypatch)
    at.number_input(key="sql-time").set_value(300.0)
    at.text_area(key="sql-text").input("SELECT count(*) FROM range(100000000) a, range(100000000) b "
                                       "WHERE a.range * b.range = 7").run()
    started = time.perf_counter()
    at.button(key="sql-run").click()
    at.run(timeout=120)
    elapsed = time.perf_counter() - started
    assert any(f"{q.SQL_TIME_LIMIT:g} s limit" in e.value for e in at.error), [e.value for e in at.error]
    assert elapsed < q.SQL_TIME_LIMIT + 20
