"""dashboard.queries on a small real store: results, filters, SQL-page safety, locks, caching."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from support.store import build_store, make_store_module, raw

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dash-q")
    build_store(root, n_artists=30, n_templates=2, n_seeds=3, n_checkpoints=3, with_images=True)
    return root


@pytest.fixture()
def store(workdir):
    from dashboard import queries as q

    return q.Store.at(workdir, use_cache=False)


def test_builder_fills_every_table_consistently(workdir):
    counts = {t: raw(workdir, f"SELECT count(*) FROM {t}")[0][0] for t in [
        "artists", "templates", "checkpoints", "runs", "images", "image_scores", "artist_scores",
        "checkpoint_scores", "artist_neighbors", "comparisons", "reference_images"]}
    assert all(n > 0 for n in counts.values()), counts
    # 30 artists x 2 templates x 3 seeds x 3 checkpoints + 3 x 3 baseline + 2 refs x 2 artists
    assert counts["images"] == 30 * 2 * 3 * 3 + 3 * 3 + 2 * 2
    assert raw(workdir, "SELECT count(*) FROM artist_neighbors WHERE artist_id = neighbor_id")[0][0] == 0
    assert raw(workdir, "SELECT count(*) - count(DISTINCT image_id) FROM images")[0][0] == 0
    # every stored path is relative and its file exists
    paths = raw(workdir, "SELECT path, thumb_path FROM images WHERE path IS NOT NULL")
    assert all(not p.startswith("/") and (workdir / p).is_file() and (workdir / t).is_file() for p, t in paths)
    verdicts = dict(raw(workdir, "SELECT verdict, count(*) FROM comparisons GROUP BY ALL"))
    assert verdicts.get("gained", 0) > 0 and verdicts.get("lost", 0) > 0


def test_builder_refuses_to_overwrite_and_bad_sizes(workdir, tmp_path):
    make = make_store_module()
    with pytest.raises(FileExistsError, match="already exists"):
        make.build_store(workdir, make.SyntheticStoreSpec(5, 1, 1, 1))
    with pytest.raises(ValueError, match="n_seeds must be >= 1 but is 0"):
        make.build_store(tmp_path / "x", make.SyntheticStoreSpec(5, 1, 0, 1))


def test_leaderboard_and_overview_match_the_tables(store, workdir):
    from dashboard import queries as q

    stats = q.overview(store)
    assert stats["artists"] == 30 and stats["checkpoints"] == 3
    assert stats["errors"] == raw(workdir, "SELECT count(*) FROM images WHERE error IS NOT NULL")[0][0]
    model = q.models(store)[0]
    board = q.leaderboard(store, model)
    expected = raw(workdir, "SELECT value FROM checkpoint_scores WHERE checkpoint='ft-1' AND metric='top1' AND model=?", [model])[0][0]
    got = board[(board.checkpoint == "ft-1") & (board.metric == "top1")].value.iloc[0]
    assert got == pytest.approx(expected)
    assert q.checkpoint_names(store)[0] == "base"
    prov = q.checkpoint_provenance(store)
    assert set(prov.checkpoint) == {"base", "ft-1", "ft-2"}
    assert prov.fingerprint.str.len().min() == 64 and prov.last_run.notna().all()
    hist = q.metric_histogram(store, model, "artist_similarity", bins=10)
    assert hist.groupby("checkpoint").artists.sum().tolist() == [30, 30, 30]
    assert hist.bin.between(0, 9).all()


def test_compare_filters_and_verdicts(store, workdir):
    from dashboard import queries as q

    model = q.models(store)[0]
    summary = q.comparison_summary(store, "base", "ft-1", model, "artist_similarity")
    n = dict(raw(workdir, "SELECT verdict, count(*) FROM comparisons WHERE finetune='ft-1' AND metric='artist_similarity' GROUP BY ALL"))
    assert summary["gained"] == n.get("gained", 0) and summary["lost"] == n.get("lost", 0)
    assert summary["artists"] == 30
    gained = q.comparison_table(store, "base", "ft-1", model, "artist_similarity", verdict="gained")
    assert (gained.ci_low > 0).all() and (gained.verdict == "gained").all()
    assert list(gained.delta) == sorted(gained.delta, reverse=True)
    tag = q.filter_options(store)["tag"][0]
    filtered = q.comparison_table(store, "base", "ft-1", model, "artist_similarity", q.ArtistFilter(tag=tag), limit=1000)
    expected = raw(workdir, "SELECT count(*) FROM artists WHERE list_contains(string_split(tags, '; '), ?)", [tag])[0][0]
    assert len(filtered) == expected and filtered.tags.str.contains(tag, regex=False).all()
    hist = q.delta_histogram(store, "base", "ft-1", model, "artist_similarity", bins=8)
    assert hist.artists.sum() == 30
    name = q.comparison_table(store, "base", "ft-1", model, "artist_similarity", q.ArtistFilter(name="MONET"))
    assert name.artist_id.tolist() == ["claude-monet"]
    with pytest.raises(ValueError, match="order must be one of"):
        q.comparison_table(store, "base", "ft-1", model, "artist_similarity", order="delta; DROP TABLE x")


def test_gallery_pages_and_image_detail(store):
    from dashboard import queries as q

    page1, total = q.gallery_artists(store, q.ArtistFilter(), 12, 0)
    page3, _ = q.gallery_artists(store, q.ArtistFilter(), 12, 24)
    assert total == 30 and len(page1) == 12 and len(page3) == 6
    assert not set(page1.artist_id) & set(page3.artist_id)
    templates, seeds = q.templates_and_seeds(store)
    assert "null" not in templates and seeds == [0, 1, 2]
    images = q.gallery_images(store, page1.artist_id.tolist(), templates[0], 1)
    assert len(images) == 12 * 3 and set(images.checkpoint) == {"base", "ft-1", "ft-2"}
    row, scores = q.image_detail(store, int(images.image_id.iloc[0]))
    assert row.seed.iloc[0] == 1 and row.template.iloc[0] == templates[0]
    assert len(scores) == 0 or set(scores.metric) <= {"clip_score", "artist_similarity", "artist_rank", "top1", "top5"}


def test_artist_page_queries(store):
    from dashboard import queries as q

    assert q.artist_search(store, "kahlo").artist_id.tolist() == ["frida-kahlo"]
    model = q.models(store)[0]
    assert q.artist_image_count(store, "claude-monet") == 2 * 3 * 3
    assert len(q.artist_images(store, "claude-monet", limit=5, offset=15)) == 3
    neighbors = q.artist_neighbors_of(store, "claude-monet", model)
    assert len(neighbors) == 3 * 10 and "claude-monet" not in set(neighbors.neighbor_id)
    refs = q.artist_references(store, "claude-monet")
    assert len(refs) == 2 and refs.path.str.startswith("imported/").all()
    assert set(q.artist_scores_of(store, "claude-monet", model).checkpoint) == {"base", "ft-1", "ft-2"}


def test_similarity_tables(store):
    from dashboard import queries as q

    model = q.models(store)[0]
    pairs = q.top_similar_pairs(store, "base", model, limit=20)
    assert list(pairs.similarity) == sorted(pairs.similarity, reverse=True)
    near = q.artist_neighbors_of(store, "claude-monet", model)
    ids = ["claude-monet", *near[near.checkpoint == "base"].neighbor_id]
    matrix = q.similarity_matrix(store, "base", model, ids)
    assert set(matrix.artist) | set(matrix.neighbor) <= set(q.artist_names(store, ids).name)
    assert (matrix.artist == "Claude Monet").sum() == 10


@pytest.mark.parametrize("sql, message", [
    ("CREATE TABLE x AS SELECT 1", "CREATE statement"),
    ("COPY images TO '/tmp/x.csv'", "COPY statement"),
    ("SELECT * FROM read_csv('/etc/passwd')", "cannot read files"),
    ("ATTACH '/tmp/other.db' AS o", "ATTACH statement"),
    ("SET enable_external_access = true", "SET statement"),
    ("PRAGMA version", "PRAGMA statement"),
    ("INSTALL httpfs", "LOAD statement"),
    ("SELECT 1; DROP TABLE images", "one statement at a time"),
    ("EXPLAIN ANALYZE COPY images TO '/tmp/x.csv'", "EXPLAIN is allowed only"),
    ("", "empty"),
    ("SELEC 1", "does not parse"),
])
def test_sql_page_refuses_anything_but_a_read(store, sql, message):
    from dashboard import queries as q

    with pytest.raises(q.UnsafeQueryError, match=message):
        q.run_user_sql(store, sql)


def test_sql_page_cannot_read_a_file_by_its_name(store):
    from dashboard import queries as q

    # with external access off, a quoted path is not a file but an unknown table
    with pytest.raises(duckdb.Error, match="does not exist"):
        q.run_user_sql(store, "SELECT * FROM '/etc/passwd'")
    with pytest.raises(q.UnsafeQueryError, match="cannot read files"):
        q.run_user_sql(store, "SELECT * FROM read_parquet('" + str(store.workdir / "x.parquet") + "')")


def test_sql_page_runs_reads_with_row_and_time_limits(store):
    from dashboard import queries as q

    result = q.run_user_sql(store, "SELECT range AS i FROM range(25000)", row_limit=1000)
    assert result.truncated and len(result.frame) == 1000 and result.frame.i.tolist()[:3] == [0, 1, 2]
    small = q.run_user_sql(store, "SELECT count(*) AS n FROM images")
    assert not small.truncated and small.frame.n.iloc[0] > 0
    assert len(q.run_user_sql(store, "DESCRIBE images").frame) >= 21
    assert len(q.run_user_sql(store, "EXPLAIN SELECT * FROM artists").frame) >= 1
    assert len(q.run_user_sql(store, "explain analyze SELECT count(*) FROM images").frame) >= 1
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0.5 s limit"):
        q.run_user_sql(store, "SELECT sum(hash(a.range * b.range)) FROM range(100000) a, range(100000) b", time_limit=0.5)
    assert time.monotonic() - started < 10
    for sql in q.EXAMPLE_QUERIES.values():  # every example runs on a real store
        q.run_user_sql(store, sql)


def test_csv_export_neutralizes_formulas_and_parquet_roundtrips():
    from dashboard import queries as q

    frame = pd.DataFrame({"a": ["=1+2", "+cmd", "-x", "@SUM(A1)", "\tx", "\rx", "ok", None], "n": [-1, 2, 3, 4, 5, 6, 7, 8]})
    text = q.csv_bytes(frame).decode()
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert back.a.tolist()[:6] == ["'=1+2", "'+cmd", "'-x", "'@SUM(A1)", "'\tx", "'\rx"]
    assert back.a.tolist()[6] == "ok" and back.n.tolist()[0] == -1  # numbers untouched
    assert pd.read_parquet(io.BytesIO(q.parquet_bytes(frame))).a.tolist()[0] == "=1+2"  # Parquet keeps data as is


def test_image_paths_are_confined_to_the_workdir(workdir, store):
    from dashboard import queries as q

    rel = raw(workdir, "SELECT thumb_path FROM images WHERE thumb_path IS NOT NULL LIMIT 1")[0][0]
    assert q.image_file(workdir, rel) == (workdir / rel).resolve()
    assert q.image_file(workdir, "../../etc/passwd") is None
    assert q.image_file(workdir, "/etc/passwd") is None
    assert q.image_file(workdir, None) is None
    assert q.image_file(workdir, "images/missing.png") is None


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("INSERT INTO templates VALUES ('held-' || epoch_ms(now())::VARCHAR, 'x')")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def hold_store(workdir: Path, seconds: float) -> subprocess.Popen:
    """Another process that opens the store for writing, writes, and holds it."""
    proc = subprocess.Popen([PYTHON, "-c", HOLDER, str(workdir / "atelier.duckdb"), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_held_by_a_writer_waits_or_serves_the_last_result(workdir):
    from dashboard import queries as q

    quick = q.Store.at(workdir, use_cache=False, lock_timeout=0.2)
    patient = q.Store.at(workdir, use_cache=False, lock_timeout=10)
    before = quick.df("SELECT count(*) AS n FROM templates").n.iloc[0]
    q.take_notices()
    proc = hold_store(workdir, 3.0)
    try:
        stale = quick.df("SELECT count(*) AS n FROM templates")
        assert stale.n.iloc[0] == before
        assert any("being written" in n for n in q.take_notices())
        with pytest.raises(q.StoreBusyError, match="being written by another process"):
            quick.df("SELECT 42 AS never_run_before")
        fresh = patient.df("SELECT count(*) AS n FROM templates")  # waits for the writer
        assert fresh.n.iloc[0] == before + 1
    finally:
        proc.wait(timeout=30)


def test_cache_drops_when_the_store_changes(workdir):
    """Streamlit's cache is keyed on the store's (mtime, size): a write is seen at once."""
    from dashboard import queries as q

    store = q.Store.at(workdir)  # cached
    sql = "SELECT count(*) AS n FROM templates"
    first = store.df(sql).n.iloc[0]
    stamp = store.stamp()
    assert store.df(sql).n.iloc[0] == first
    hold_store(workdir, 0.0).wait(timeout=30)
    assert store.stamp() != stamp
    assert store.df(sql).n.iloc[0] == first + 1


def test_dashboard_modules_never_import_torch(workdir):
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["ATELIER_WORKDIR"] = {str(workdir)!r}
        import dashboard.queries, dashboard.views, dashboard.report, dashboard.cli
        from streamlit.testing.v1 import AppTest
        for page in ["Leaderboard", "Compare", "Gallery", "Artist", "Similarity", "SQL", "Runs"]:
            at = AppTest.from_file({str(REPO / "dashboard" / "app.py")!r}, default_timeout=60)
            at.query_params["page"] = page
            at.run()
            assert not at.exception, (page, at.exception)
        heavy = sorted(m for m in ("torch", "open_clip", "faiss", "diffusers", "transformers") if m in sys.modules)
        print("HEAVY", heavy)
    """)
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY []" in out.stdout, out.stdout


def test_a_page_session_shares_one_connection_and_releases_it_at_the_end(workdir):
    """Inside a session the store stays open (a writer is refused); after it, writers get in."""
    from dashboard import queries as q

    store = q.Store.at(workdir, use_cache=False)
    try_write = textwrap.dedent("""
        import sys, duckdb
        try:
            duckdb.connect(sys.argv[1]).close()
            print("wrote")
        except duckdb.IOException as exc:
            print("blocked" if "lock" in str(exc).lower() else exc)
    """)

    def writer() -> str:
        return subprocess.run([PYTHON, "-c", try_write, str(workdir / "atelier.duckdb")], capture_output=True,
                              text=True, timeout=60).stdout.strip()

    with store.session():
        first = store.df("SELECT count(*) AS n FROM artists")
        assert writer() == "blocked"
        second = store.df("SELECT count(*) AS n FROM images")
        assert first.n.iloc[0] == 30 and second.n.iloc[0] > 0
    assert writer() == "wrote"
    store.df("SELECT 1 AS one")  # outside a session: opened and closed at once
    assert writer() == "wrote"


def test_auto_recognized_no_means_decided_no_not_undecided(tmp_path):
    """An artist whose `recognized` is NULL (undecided) is in neither the yes nor the no filter."""
    from evaluator.workspace.queries import ArtistFilter

    build_store(tmp_path, n_artists=12, n_templates=1, n_seeds=2, n_checkpoints=2, with_images=False)
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"))
    checkpoint, model = con.execute(
        "SELECT checkpoint, model FROM artist_scores WHERE metric = 'recognized' LIMIT 1").fetchone()
    undecided = con.execute(
        "SELECT artist_id FROM artist_scores WHERE metric = 'recognized' AND checkpoint = ? AND model = ? "
        "ORDER BY artist_id LIMIT 1", [checkpoint, model]).fetchone()[0]
    con.execute("UPDATE artist_scores SET value = NULL WHERE metric = 'recognized' AND checkpoint = ? "
                "AND model = ? AND artist_id = ?", [checkpoint, model, undecided])

    def chosen(answer: str) -> set[str]:
        where, params = ArtistFilter(auto_recognized=answer, auto_checkpoint=checkpoint, auto_model=model).where("ar")
        return {r[0] for r in con.execute(f"SELECT ar.artist_id FROM artists ar WHERE {where}", params).fetchall()}

    yes, no = chosen("yes"), chosen("no")
    scored = {r[0] for r in con.execute(
        "SELECT artist_id FROM artist_scores WHERE metric = 'recognized' AND checkpoint = ? AND model = ? "
        "AND value IS NOT NULL", [checkpoint, model]).fetchall()}
    con.close()
    assert undecided not in yes | no
    assert yes | no == scored and not yes & no
