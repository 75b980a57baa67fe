"""Every page of the Streamlit app under AppTest, on a small real store; and under a writer's lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest
from support.store import build_store, raw

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
PAGES = ["Leaderboard", "Compare", "Gallery", "Artist", "Similarity", "SQL", "Runs"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dash-app")
    build_store(root, n_artists=30, n_templates=2, n_seeds=3, n_checkpoints=3, with_images=True)
    return root


def open_page(workdir: Path, page: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("ATELIER_WORKDIR", str(workdir))
    monkeypatch.delenv("ATELIER_DASHBOARD_LOCK_TIMEOUT", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, *columns: str, index: str | None = None, nth: int = 0):
    """The nth dataframe shown that has these columns (and this index name)."""
    found = [d.value for d in at.dataframe
             if set(columns) <= set(d.value.columns) and (index is None or d.value.index.name == index)]
    assert len(found) > nth, f"no dataframe with {columns} / {index}; have {[list(d.value.columns) for d in at.dataframe]}"
    return found[nth]


def images(at: AppTest) -> list:
    return list(at.get("image"))


def test_no_workdir_and_missing_store_are_clear_messages(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_WORKDIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and "No workdir" in at.error[0].value
    monkeypatch.setenv("ATELIER_WORKDIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception and "No store at" in at.error[0].value


def test_leaderboard_shows_checkpoints_with_cis_sorted_and_provenance(workdir, monkeypatch):
    at = open_page(workdir, "Leaderboard", monkeypatch)
    shown = metrics(at)
    assert shown["Checkpoints"] == "3"
    assert shown["Artists evaluated"] == str(raw(workdir, "SELECT count(DISTINCT artist_id) FROM artist_scores")[0][0])
    assert shown["Failed images"] == str(raw(workdir, "SELECT count(*) FROM images WHERE error IS NOT NULL")[0][0])
    table = frame(at, "artist_similarity CI")
    assert sorted(table.checkpoint) == ["base", "ft-1", "ft-2"]
    assert {"artist_similarity", "artist_similarity CI", "top1", "top1 CI"} <= set(table.columns)
    assert table["artist_similarity CI"].str.match(r"^\[[-0-9.e]+, [-0-9.e]+\]$").all()
    assert list(table.artist_similarity) == sorted(table.artist_similarity, reverse=True)
    # artist_rank: lower is better, so "best first" sorts ascending
    at.selectbox(key="lb-sort").set_value("artist_rank").run()
    table = frame(at, "artist_similarity CI")
    assert list(table.artist_rank) == sorted(table.artist_rank)
    at.toggle(key="lb-best").set_value(False).run()
    assert list(frame(at, "artist_similarity CI").artist_rank) == sorted(table.artist_rank, reverse=True)
    prov = frame(at, "fingerprint")
    assert set(prov.checkpoint) == {"base", "ft-1", "ft-2"} and prov.fingerprint.str.len().eq(64).all()
    assert prov.versions.str.contains("diffusers").all()
    assert len(at.get("vega_lite_chart")) == 2  # CI bars + metric histogram


def test_compare_counts_lists_and_filters(workdir, monkeypatch):
    at = open_page(workdir, "Compare", monkeypatch)
    at.selectbox(key="cmp-metric").set_value("artist_similarity").run()
    counts = dict(raw(workdir, "SELECT verdict, count(*) FROM comparisons WHERE finetune = 'ft-1' "
                               "AND metric = 'artist_similarity' GROUP BY ALL"))
    shown = metrics(at)
    assert shown["Artists"] == "30"
    assert shown["Gained"] == str(counts.get("gained", 0)) and shown["Lost"] == str(counts.get("lost", 0))
    gained, lost = frame(at, "name", "delta", nth=0), frame(at, "name", "delta", nth=1)
    assert len(gained) == counts.get("gained", 0) and (gained.ci_low > 0).all()
    assert len(lost) == counts.get("lost", 0) and (lost.ci_high < 0).all()
    assert len(frame(at, "verdict", "movements")) == 30
    assert len(at.get("vega_lite_chart")) == 3  # verdict matrix + scatter + forest plot
    at.selectbox(key="cmp-pair").set_value(("base", "ft-2")).run()
    counts2 = dict(raw(workdir, "SELECT verdict, count(*) FROM comparisons WHERE finetune = 'ft-2' "
                                "AND metric = 'artist_similarity' GROUP BY ALL"))
    assert metrics(at)["Gained"] == str(counts2.get("gained", 0))
    movement = raw(workdir, "SELECT unnest(string_split(movements, '; ')) AS m, count(*) FROM artists GROUP BY m ORDER BY 2 DESC, 1 LIMIT 1")
    at.selectbox(key="cmp-movement").set_value(movement[0][0]).run()
    assert metrics(at)["Artists"] == str(movement[0][1])
    table = frame(at, "verdict", "movements")
    assert len(table) == movement[0][1] and table.movements.str.contains(movement[0][0], regex=False).all()
    at.selectbox(key="cmp-rec").set_value("yes").run()
    assert (frame(at, "verdict", "movements").recognized_sdxl == "yes").all()
    at.selectbox(key="cmp-movement").set_value("(any)")
    at.selectbox(key="cmp-rec").set_value("(any)").run()
    at.selectbox(key="cmp-auto").set_value("yes").run()
    known = {r[0] for r in raw(workdir, "SELECT artist_id FROM artist_scores WHERE checkpoint = 'base' "
                                        "AND metric = 'recognized' AND value >= 0.5")}
    table = frame(at, "verdict", "movements")
    assert 0 < len(table) < 30 and set(table.artist_id) == known
    assert metrics(at)["Artists"] == str(len(known))


def test_compare_shows_every_metric_thumbnails_and_carries_artists_to_the_gallery(workdir, monkeypatch):
    import json

    at = open_page(workdir, "Compare", monkeypatch)
    at.selectbox(key="cmp-metric").set_value("artist_similarity").run()
    import pyarrow as pa

    protos = list(at.get("vega_lite_chart"))
    charts = [json.loads(c.proto.spec) for c in protos]
    matrix = next(i for i, c in enumerate(charts) if c.get("mark", {}).get("type") == "rect")
    cells = pa.ipc.open_stream(protos[matrix].proto.datasets[0].data.data).read_pandas()
    stored = raw(workdir, "SELECT count(DISTINCT metric) FROM comparisons WHERE finetune = 'ft-1'")[0][0]
    assert cells.metric.nunique() == stored > 1  # every metric at once, not one
    # the scatter's first layer is the diagonal: drawn under the points
    scatter = next(c for c in charts if "layer" in c and c["layer"][1]["mark"]["type"] == "circle")
    assert scatter["layer"][0]["mark"]["type"] == "line"
    lost = raw(workdir, "SELECT count(*) FROM comparisons WHERE finetune = 'ft-1' AND metric = 'artist_similarity' "
                        "AND verdict = 'lost'")[0][0]
    gallery_links = [b for b in at.button if b.key and b.key.startswith("cmp-lost-gallery-")]
    assert len(gallery_links) == min(lost, 5) > 0
    assert len(images(at)) >= 2 * len(gallery_links)  # base beside fine-tune for each shown artist
    at.multiselect(key="cmp-verdicts").set_value(["lost"]).run()
    assert set(frame(at, "verdict", "movements").verdict) == {"lost"}
    at.button(key="cmp-to-gallery").click().run()
    assert at.session_state["page"] == "Gallery"
    assert not at.exception, [e.value for e in at.exception]
    shown = {b.key.removeprefix("gal-view-") for b in at.button if b.key and b.key.startswith("gal-view-")}
    ids = {r[0] for r in raw(workdir, "SELECT i.image_id FROM images i JOIN comparisons c USING (artist_id) "
                                      "WHERE c.finetune = 'ft-1' AND c.metric = 'artist_similarity' AND c.verdict = 'lost' "
                                      "AND i.checkpoint IN ('base', 'ft-1') AND i.source = 'generated'")}
    ids |= {r[0] for r in raw(workdir, "SELECT image_id FROM images WHERE artist_id = '_baseline' "
                                       "AND checkpoint IN ('base', 'ft-1')")}  # the no-artist row
    assert shown and {int(i) for i in shown} <= ids  # only the carried artists, only base and fine-tune
    assert any("opened from Compare" in i.value for i in at.info)


def test_gallery_grid_paging_and_full_image(workdir, monkeypatch):
    at = open_page(workdir, "Gallery", monkeypatch)
    template = at.selectbox(key="gal-template").value
    failed = raw(workdir, """SELECT count(*) FROM images WHERE error IS NOT NULL AND template = ? AND seed = 0
                             AND artist_id IN (SELECT artist_id FROM artists ORDER BY name, artist_id LIMIT 12)""", [template])[0][0]
    baseline = raw(workdir, "SELECT count(DISTINCT checkpoint) FROM images WHERE artist_id = '_baseline' AND seed = 0 "
                            "AND error IS NULL")[0][0]
    # the no-artist baseline row, then 12 artists x 3 checkpoints, same template and seed
    assert len(images(at)) == baseline + 12 * 3 - failed
    assert any(f"{baseline + 12 * 3 - failed} thumbnails" in c.value for c in at.caption)
    at.number_input(key="gal-page").set_value(3).run()
    assert baseline + 6 * 3 - 2 <= len(images(at)) <= baseline + 6 * 3
    at.number_input(key="gal-page").set_value(1).run()
    at.text_input(key="gal-name").input("monet").run()
    assert len(images(at)) == baseline + 3
    view = [b for b in at.button if b.key and b.key.startswith("gal-view-")
            and raw(workdir, "SELECT artist_id FROM images WHERE image_id = ?", [int(b.key[9:])])[0][0] != "_baseline"]
    assert len(view) == 3
    image_id = int(view[0].key.removeprefix("gal-view-"))
    view[0].click().run()
    params = frame(at, "field", "value").set_index("field")["value"]
    row = raw(workdir, "SELECT prompt, seed, checkpoint FROM images WHERE image_id = ?", [image_id])[0]
    assert params["prompt"] == row[0] and params["seed"] == str(row[1]) and params["checkpoint"] == row[2]
    assert "Claude Monet" in params["prompt"]
    assert len(images(at)) == baseline + 4  # the full image, under the row clicked
    assert any("Seed: " in c.value for c in at.code)  # the PNG's own `parameters` chunk
    at.button(key="gal-image-close").click().run()
    assert len(images(at)) == baseline + 3
    at.toggle(key="gal-strip").set_value(True).run()  # every seed (up to 4) in each cell
    seeds = raw(workdir, "SELECT count(DISTINCT seed) FROM images WHERE artist_id = 'claude-monet' AND template = ?",
                [template])[0][0]
    assert len(images(at)) >= 3 * min(seeds, 4) > 3


def test_gallery_of_many_checkpoints_shows_the_first_few_until_others_are_chosen(tmp_path, monkeypatch):
    from dashboard.gallery import DEFAULT_CHECKPOINTS

    build_store(tmp_path, n_artists=6, n_templates=1, n_seeds=1, n_checkpoints=7, error_rate=0.0)
    names = [r[0] for r in raw(tmp_path, "SELECT name FROM checkpoints")]
    at = open_page(tmp_path, "Gallery", monkeypatch)
    shown = at.multiselect(key="gal-ckpts").value
    assert len(shown) == DEFAULT_CHECKPOINTS < len(names) and set(shown) <= set(names)
    assert any(f"{DEFAULT_CHECKPOINTS} of {len(names)} checkpoints shown" in c.value for c in at.caption)
    # one row of no-artist baseline images and one per artist, a column per checkpoint shown
    assert len(images(at)) == (6 + 1) * DEFAULT_CHECKPOINTS
    at.multiselect(key="gal-ckpts").set_value(names).run()
    assert len(images(at)) == (6 + 1) * len(names)
    assert not any("checkpoints shown" in c.value for c in at.caption)


def test_artist_page_scores_neighbors_references_images(workdir, monkeypatch):
    at = open_page(workdir, "Artist", monkeypatch)
    at.text_input(key="art-search").input("monet").run()
    assert at.selectbox(key="art-id").value == "claude-monet"
    born, died = raw(workdir, "SELECT born, died FROM artists WHERE artist_id = 'claude-monet'")[0]
    assert any(s.value == f"Claude Monet ({born}–{died if died is not None else ''})" for s in at.subheader), [s.value for s in at.subheader]
    scores = frame(at, index="metric")
    assert list(scores.columns) == ["base", "ft-1", "ft-2"] and "artist_similarity" in scores.index
    neighbors = frame(at, index="rank")
    assert neighbors.shape == (10, 3)
    assert any("Reference works (2)" in s.value for s in at.subheader)
    assert any("Images (18)" in s.value for s in at.subheader)
    assert len(images(at)) == 2 + 18 - int(raw(workdir, "SELECT count(*) FROM images WHERE artist_id='claude-monet' AND error IS NOT NULL")[0][0])


def test_similarity_tables_heatmap_and_search_message(workdir, monkeypatch):
    at = open_page(workdir, "Similarity", monkeypatch)
    pairs = frame(at, "artist", "neighbor", "similarity")
    assert len(pairs) > 0 and list(pairs.similarity) == sorted(pairs.similarity, reverse=True)
    at.text_input(key="sim-artist-search").input("kahlo").run()
    matrix = frame(at, index="artist")
    assert "Frida Kahlo" in matrix.index and matrix.loc["Frida Kahlo"].notna().sum() == 10
    assert len(at.get("vega_lite_chart")) == 1  # the heatmap
    # no FAISS index in this store: a search says so instead of crashing
    at.text_input(key="sim-text").input("a stormy sea")  # in a form: sent with the submit
    at.button(key="sim-go").click().run()
    assert not at.exception
    assert any("no FAISS index" in e.value or "Search failed" in e.value for e in at.error)


def test_similarity_matrix_from_embeddings_has_no_holes_and_the_map_every_artist(pipeline_workdir, monkeypatch):
    at = open_page(pipeline_workdir, "Similarity", monkeypatch)
    artists = raw(pipeline_workdir, "SELECT count(DISTINCT artist_id) FROM images WHERE checkpoint = 'base' "
                                    "AND artist_id <> '_baseline' AND error IS NULL")[0][0]
    at.radio(key="sim-mode").set_value("The filtered artists").run()
    assert not at.exception, [e.value for e in at.exception]
    matrix = frame(at, index="artist")
    assert matrix.shape == (artists, artists) and matrix.notna().all().all()  # every cell, not the top k
    diagonal = [matrix.loc[name, name] for name in matrix.index]
    assert all(abs(value - 1.0) < 1e-6 for value in diagonal)
    assert (matrix.to_numpy() <= 1 + 1e-6).all() and len({round(float(v), 6) for v in matrix.to_numpy().ravel()}) > artists
    assert list(matrix.columns) == list(matrix.index)  # the table in the heatmap's (seriated) order
    charts = list(at.get("vega_lite_chart"))
    assert len(charts) == 2  # the heatmap and the map of every artist


def test_sql_page_refuses_writes_and_files_limits_rows_and_exports(workdir, monkeypatch):
    at = open_page(workdir, "SQL", monkeypatch)
    assert at.text_area(key="sql-text").value.startswith("SELECT")
    for sql, message in [("CREATE TABLE x AS SELECT 1", "CREATE"), ("COPY images TO '/tmp/out.csv'", "COPY"),
                         ("SELECT * FROM read_csv('/etc/passwd')", "cannot read files")]:
        at.text_area(key="sql-text").input(sql).run()
        at.button(key="sql-run").click().run()
        assert not at.exception and any(message in e.value for e in at.error), [e.value for e in at.error]
    assert "x" not in {r[0] for r in raw(workdir, "SHOW TABLES")}
    at.number_input(key="sql-rows").set_value(100).run()
    at.text_area(key="sql-text").input("SELECT range AS i, '=HYPERLINK(1)' AS f FROM range(5000)").run()
    at.button(key="sql-run").click().run()
    result = frame(at, "i", "f")
    assert len(result) == 100 and any("truncated at the row limit of 100" in c.value for c in at.caption)
    assert not at.get("download_button")  # the bytes are built only on request
    at.button(key="sql-csv-make").click().run()
    assert len(at.get("download_button")) == 1
    from dashboard.queries import csv_bytes

    assert "\"'=HYPERLINK(1)\"" in csv_bytes(result).decode()


def test_runs_page_progress_and_errors(workdir, monkeypatch):
    at = open_page(workdir, "Runs", monkeypatch)
    assert metrics(at)["Runs"] == "4" and metrics(at)["Generation runs"] == "3"
    progress = frame(at, "run_id", "images", "failed")
    assert progress.images.sum() == raw(workdir, "SELECT count(*) FROM images")[0][0]
    n_errors = raw(workdir, "SELECT count(*) FROM images WHERE error IS NOT NULL")[0][0]
    assert progress.failed.sum() == n_errors
    scored = frame(at, "checkpoint", "scored")
    expected = dict(raw(workdir, "SELECT i.checkpoint, count(DISTINCT s.image_id) FROM image_scores s JOIN images i USING (image_id) GROUP BY 1"))
    assert dict(zip(scored.checkpoint, scored.scored.astype(int), strict=True)) == expected
    if n_errors:
        errors = frame(at, "error", "template")
        assert len(errors) == n_errors and errors.error.str.contains("NaN latents").all()


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("INSERT INTO runs (run_id, kind, status) VALUES ('held-' || epoch_ms(now())::VARCHAR, 'score', 'running')")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def hold(workdir: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir / "atelier.duckdb"), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("page", ["Leaderboard", "Runs"])
def test_app_keeps_working_while_another_process_writes(workdir, monkeypatch, page):
    at = open_page(workdir, page, monkeypatch)
    runs_before = raw(workdir, "SELECT count(*) FROM runs")[0][0]
    # 1. the app waits (default 3 s) for a writer holding the store 2 s, then shows fresh data
    proc = hold(workdir, 2.0)
    try:
        at.run()
        assert not at.exception and not at.error
        if page == "Runs":
            assert metrics(at)["Runs"] == str(runs_before + 1)
    finally:
        proc.wait(timeout=30)
    # 2. when the lock outlasts the wait, the last committed state is shown with a notice
    monkeypatch.setenv("ATELIER_DASHBOARD_LOCK_TIMEOUT", "0.2")
    proc = hold(workdir, 4.0)  # long enough that a busy machine still queries while it is held
    try:
        at.run()
        assert not at.exception and not at.error
        assert any("being written by another process" in w.value for w in at.warning)
        if page == "Runs":
            assert metrics(at)["Runs"] == str(runs_before + 1)  # the state before this write
    finally:
        proc.wait(timeout=30)
    at.run()
    assert not at.warning


@pytest.mark.slow
def test_every_page_on_a_store_made_by_the_real_pipeline(pipeline_workdir, monkeypatch):
    """The tiny-model demo pipeline's store: every page renders and shows its checkpoints."""
    names = {r[0] for r in raw(pipeline_workdir, "SELECT name FROM checkpoints")}
    for page in PAGES:
        at = open_page(pipeline_workdir, page, monkeypatch)
        if page == "Leaderboard":
            assert set(frame(at, "artist_similarity CI").checkpoint) <= names | {r[0] for r in raw(pipeline_workdir, "SELECT DISTINCT checkpoint FROM checkpoint_scores")}
            assert metrics(at)["Checkpoints"] == str(len(names))
        if page == "Gallery":
            assert len(images(at)) > 0
        if page == "Compare" and raw(pipeline_workdir, "SELECT count(*) FROM comparisons")[0][0]:
            assert int(metrics(at)["Artists"].replace(",", "")) > 0
        if page == "Similarity":
            # a text query through the evaluator's CLIP and FAISS index (loaded lazily, cached)
            at.text_input(key="sim-text").input("a stormy sea")  # in a form: sent with the submit
            at.button(key="sim-go").click().run()
            assert not at.exception and not at.error, [e.value for e in at.error]
            nearest = frame(at, "artist_id", "max", "count")
            assert len(nearest) > 0 and set(nearest.artist_id) <= {r[0] for r in raw(pipeline_workdir, "SELECT DISTINCT artist_id FROM images")}
            assert len(images(at)) > 0


def test_dashboard_command_line_and_workdir_arguments(tmp_path, workdir):
    from click.testing import CliRunner

    from dashboard.cli import streamlit_command
    from dashboard.queries import workdir_from_args
    from evaluator.cli.main import main

    result = CliRunner().invoke(main, ["dashboard", "--workdir", str(tmp_path / "absent")])
    assert result.exit_code != 0 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["dashboard", "--workdir", str(tmp_path / "empty")])
    assert result.exit_code != 0 and "no store at" in result.output
    command = streamlit_command(workdir, 8599, "127.0.0.1")
    assert command[command.index("run") + 1] == APP
    assert command[command.index("--server.port") + 1] == "8599" and command[-2:] == ["--workdir", str(workdir)]
    assert command[command.index("--server.headless") + 1] == "true"
    assert workdir_from_args(["--workdir", "/a"], {"ATELIER_WORKDIR": "/b"}) == "/a"
    assert workdir_from_args([], {"ATELIER_WORKDIR": "/b"}) == "/b"
    assert workdir_from_args([], {}) is None
    help_text = CliRunner().invoke(main, ["dashboard", "--help"]).output
    assert "--port" in help_text and "--host" in help_text


def test_pages_before_scoring_show_images_and_say_what_is_missing(tmp_path, monkeypatch):
    """Generation done, scoring not yet: no page crashes, the gallery already shows images."""
    build_store(tmp_path, n_artists=6, n_templates=1, n_seeds=1, n_checkpoints=2, with_images=True, error_rate=0.0)
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"))
    for table in ("image_scores", "artist_scores", "checkpoint_scores", "artist_neighbors", "comparisons"):
        con.execute(f"DELETE FROM {table}")
    con.close()
    for page in PAGES:
        at = open_page(tmp_path, page, monkeypatch)
        if page == "Leaderboard":
            assert metrics(at)["Images"] == "14"  # 6 artists x 2 checkpoints + 2 baselines
        if page == "Gallery":
            assert len(images(at)) == 6 * 2 + 2  # the baseline row, then 6 artists x 2 checkpoints
        if page == "Compare":
            assert any("No comparisons yet" in i.value for i in at.info)
    assert any("No scores yet" in i.value for i in at.sidebar.info)


def test_a_store_of_an_older_schema_says_how_to_migrate_and_migrate_fixes_it(tmp_path, monkeypatch):
    import duckdb
    from click.testing import CliRunner

    from evaluator.cli.main import main
    from evaluator.workspace.store import MIGRATIONS, SCHEMA_VERSION

    con = duckdb.connect(str(tmp_path / "atelier.duckdb"))  # a store written before the last migration
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)")
    for version, description, statements in MIGRATIONS[:-1]:
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations (version, description) VALUES (?, ?)", [version, description])
    con.close()

    monkeypatch.setenv("ATELIER_WORKDIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("atelier migrate" in e.value for e in at.error), [e.value for e in at.error]

    first = CliRunner().invoke(main, ["migrate", "-w", str(tmp_path)])
    assert first.exit_code == 0 and f"-> {SCHEMA_VERSION}" in first.output, first.output
    again = CliRunner().invoke(main, ["migrate", "-w", str(tmp_path)])
    assert again.exit_code == 0 and "already current" in again.output
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception and not [e for e in at.error if "atelier migrate" in e.value]
