"""`score` into DuckDB: round trip, reruns, new checkpoints, references, CLI, concurrency, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from support.scoring import ARTISTS, make_workdir, write_catalog

from evaluator.cli.main import main
from evaluator.scoring.run import ScoreConfig, score
from evaluator.testing.tiny_clip import build_tiny_clip
from evaluator.workspace.store import migrate, open_store

REPO = Path(__file__).resolve().parents[2]
PAINTINGS = REPO.parent / "shared" / "data" / "images" / "paintings"
KEYS = {
    "images": ["image_id"],
    "image_scores": ["image_id", "model", "metric"],
    "artist_scores": ["checkpoint", "artist_id", "model", "metric"],
    "checkpoint_scores": ["checkpoint", "model", "metric"],
    "artist_neighbors": ["checkpoint", "model", "artist_id", "rank"],
    "comparisons": ["base", "finetune", "artist_id", "model", "metric"],
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny", seed=0)


def cfg(clip_dir, catalog, **kw):
    base = dict(model=str(clip_dir), catalog_path=catalog, bootstrap=200, num_workers=0, progress=False)
    base.update(kw)
    return ScoreConfig(**base)


def counts(store: Path) -> dict[str, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = [*KEYS, "runs", "checkpoints", "artists", "templates", "embedding_errors"]
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def assert_no_duplicates(store: Path) -> None:
    con = duckdb.connect(str(store), read_only=True)
    try:
        for table, key in KEYS.items():
            cols = ", ".join(key)
            total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({cols})) FROM {table}").fetchone()
            assert total == distinct, table
    finally:
        con.close()


def test_score_twice_gives_identical_rows_and_writes_nothing_new(clip_dir, tmp_path):
    make_workdir(tmp_path, broken=1)
    catalog = write_catalog(tmp_path / "styles.csv")
    first = score(tmp_path, cfg(clip_dir, catalog, base_pairs=[("base", "ft")]))
    n_images = 2 * (len(ARTISTS) * 2 + 1) * 3
    assert first.n_images == n_images - 2 and first.n_failed == 2
    before = counts(tmp_path / "atelier.duckdb")
    assert before["images"] == n_images and before["embedding_errors"] == 2
    # 6 image metrics for artist images, clip_score only for the 6 baseline images (2 broken)
    assert before["image_scores"] == (n_images - 2 - 6) * 6 + 6
    assert before["checkpoints"] == 2 and before["artists"] == len(ARTISTS)
    assert before["comparisons"] > 0 and before["artist_neighbors"] == 2 * len(ARTISTS) * (len(ARTISTS) - 1)
    second = score(tmp_path, cfg(clip_dir, catalog, base_pairs=[("base", "ft")]))
    assert second.noop and second.run_id is None
    assert counts(tmp_path / "atelier.duckdb") == before
    assert_no_duplicates(tmp_path / "atelier.duckdb")
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
    try:
        bad_ci = con.execute(
            "SELECT count(*) FROM artist_scores WHERE ci_low IS NOT NULL AND NOT (ci_low <= value + 1e-9 AND value <= ci_high + 1e-9)"
        ).fetchone()[0]
        assert bad_ci == 0
        verdicts = {r[0] for r in con.execute("SELECT DISTINCT verdict FROM comparisons").fetchall()}
        assert verdicts <= {"gained", "lost", "kept"}
        # a verdict other than kept needs a CI that excludes zero
        wrong = con.execute(
            "SELECT count(*) FROM comparisons WHERE verdict <> 'kept' AND NOT (ci_low > 0 OR ci_high < 0)"
        ).fetchone()[0]
        assert wrong == 0
        kinds = dict(con.execute("SELECT kind, count(*) FROM runs GROUP BY kind").fetchall())
        assert kinds == {"score": 1, "index": 1}
        assert con.execute("SELECT count(*) FROM artist_scores WHERE artist_id = 'claude-monet' AND metric = 'top1'").fetchone()[0] == 2
    finally:
        con.close()


def test_a_new_checkpoint_scores_only_its_images(clip_dir, tmp_path):
    make_workdir(tmp_path, checkpoints=("base",))
    catalog = write_catalog(tmp_path / "styles.csv")
    first = score(tmp_path, cfg(clip_dir, catalog))
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
    old = con.execute("SELECT * FROM image_scores ORDER BY ALL").fetchall()
    con.close()
    make_workdir(tmp_path, checkpoints=("ft",), run_id="gen-2")
    second = score(tmp_path, cfg(clip_dir, catalog, base_pairs=[("base", "ft")]))
    assert second.n_scored == first.n_scored and second.n_skipped == first.n_images
    assert second.n_embedded == first.n_embedded  # only the new checkpoint's images
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
    try:
        rows = set(con.execute("SELECT * FROM image_scores").fetchall())
        assert set(old) <= rows and len(rows) == 2 * len(old)
        pairs = con.execute("SELECT DISTINCT base, finetune FROM comparisons").fetchall()
        assert pairs == [("base", "ft")]
    finally:
        con.close()
    assert_no_duplicates(tmp_path / "atelier.duckdb")


def test_migrations_rerun_safely(tmp_path):
    with open_store(tmp_path / "s.duckdb") as con:
        assert migrate(con) == []
        version = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        assert version >= 2
        cols = {r[0] for r in con.execute("DESCRIBE artist_scores").fetchall()}
        assert {"n", "n_seeds", "ci_low", "ci_high"} <= cols
    with open_store(tmp_path / "s.duckdb") as con:
        assert migrate(con) == []


@pytest.mark.skipif(not PAINTINGS.is_dir(), reason="../shared/data not present")
def test_references_from_real_paintings_give_reference_metrics(clip_dir, tmp_path):
    import csv

    make_workdir(tmp_path, seeds=(0, 1))
    artists = [*ARTISTS, ("vincent-van-gogh", "Vincent van Gogh", "Yes")]
    catalog = write_catalog(tmp_path / "styles.csv", artists)
    ref_dir = tmp_path.parent / f"{tmp_path.name}-vg"  # outside the workdir: a nested source is refused
    ref_dir.mkdir()
    with open(PAINTINGS / "labels.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if "gogh" in row["artist"].lower():
                (ref_dir / row["file"]).write_bytes((PAINTINGS / row["file"]).read_bytes())
    (ref_dir / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (ref_dir / "bad.jpg").write_bytes(b"broken jpeg")
    runner = CliRunner()
    result = runner.invoke(main, ["references", "add", "vincent-van-gogh", str(ref_dir), "--workdir", str(tmp_path),
                                  "--model", str(clip_dir), "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in result.output
    again = runner.invoke(main, ["references", "add", "vincent-van-gogh", str(ref_dir), "--workdir", str(tmp_path),
                                 "--catalog", str(catalog)])
    assert again.exit_code == 0
    typo = runner.invoke(main, ["references", "add", "vincent-van-gogg", str(ref_dir), "--workdir", str(tmp_path),
                                "--catalog", str(catalog)])
    assert typo.exit_code != 0 and "did you mean vincent-van-gogh" in typo.output
    # generated images "of" van Gogh: copy the paintings in as a checkpoint's outputs
    score(tmp_path, cfg(clip_dir, catalog))
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
    try:
        n_refs = con.execute("SELECT count(*) FROM reference_images WHERE artist_id = 'vincent-van-gogh'").fetchone()[0]
        assert n_refs >= 2
        assert con.execute("SELECT count(*) FROM images WHERE source = 'reference' AND error IS NOT NULL").fetchone()[0] == 1
        proto = con.execute("SELECT n, len(embedding) FROM reference_prototypes").fetchall()
        assert proto == [(n_refs, 16)]
    finally:
        con.close()


def test_cli_score_sql_and_search(clip_dir, tmp_path):
    make_workdir(tmp_path, seeds=(0, 1))
    catalog = write_catalog(tmp_path / "styles.csv")
    runner = CliRunner()
    result = runner.invoke(main, ["score", "--workdir", str(tmp_path), "--model", str(clip_dir), "--catalog", str(catalog),
                                  "--compare", "base:ft", "--bootstrap", "100", "--num-workers", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert "scored" in result.output
    bad = runner.invoke(main, ["score", "--workdir", str(tmp_path), "--model", str(clip_dir), "--compare", "base:ft2"])
    assert bad.exit_code != 0 and "did you mean ft" in bad.output
    sql = runner.invoke(main, ["sql", "--workdir", str(tmp_path), "SELECT count(*) AS n FROM comparisons WHERE base = 'base'"])
    assert sql.exit_code == 0 and "n" in sql.output
    write = runner.invoke(main, ["sql", "--workdir", str(tmp_path), "DELETE FROM images"])
    assert write.exit_code != 0 and "read-only" in write.output.lower()
    found = runner.invoke(main, ["search", "--workdir", str(tmp_path), "--model", str(clip_dir), "--text", "a portrait by Hokusai", "-k", "3"])
    assert found.exit_code == 0, found.output
    assert len([line for line in found.output.splitlines() if "images/" in line]) == 3
    built = runner.invoke(main, ["index", "build", "--workdir", str(tmp_path), "--model", str(clip_dir),
                                 "--ivf-threshold", "10", "--nprobe", "1", "--rebuild"])
    assert built.exit_code == 0 and "(ivf)" in built.output and "recall@10" in built.output, built.output
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs WHERE kind = 'index'").fetchone()[0] == 2
    finally:
        con.close()
    by_id = runner.invoke(main, ["index", "search", "--workdir", str(tmp_path), "--model", str(clip_dir),
                                 "--image-id", str(_any_image_id(tmp_path)), "-k", "2"])
    assert by_id.exit_code == 0 and by_id.output.count("images/") == 2, by_id.output
    listing = runner.invoke(main, ["metrics", "list"])
    assert listing.exit_code == 0 and "retrieval_map@10" in listing.output


def _any_image_id(root: Path) -> int:
    con = duckdb.connect(str(root / "atelier.duckdb"), read_only=True)
    try:
        return con.execute("SELECT min(image_id) FROM images WHERE error IS NULL").fetchone()[0]
    finally:
        con.close()


SCORE_SCRIPT = textwrap.dedent(
    """
    import sys
    from evaluator.scoring.run import ScoreConfig, score
    s = score(sys.argv[1], ScoreConfig(model=sys.argv[2], catalog_path=sys.argv[3], bootstrap=100,
              num_workers=0, batch_size=4, part_size=8, progress=False), echo=print)
    print("DONE", s.noop, s.n_scored)
    """
)


def _spawn(tmp_path, clip_dir, catalog):
    return subprocess.Popen(
        [sys.executable, "-c", SCORE_SCRIPT, str(tmp_path), str(clip_dir), str(catalog)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )


@pytest.mark.slow
def test_two_score_runs_at_once_queue_and_do_not_corrupt(clip_dir, tmp_path):
    make_workdir(tmp_path, seeds=(0, 1))
    catalog = write_catalog(tmp_path / "styles.csv")
    procs = [_spawn(tmp_path, clip_dir, catalog) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("DONE False" in o for o in outs) == 1 and sum("DONE True" in o for o in outs) == 1, outs
    assert_no_duplicates(tmp_path / "atelier.duckdb")
    reference = tmp_path.parent / (tmp_path.name + "-ref")
    reference.mkdir()
    make_workdir(reference, seeds=(0, 1))
    score(reference, cfg(clip_dir, write_catalog(reference / "styles.csv")))
    got, want = counts(tmp_path / "atelier.duckdb"), counts(reference / "atelier.duckdb")
    assert got == want


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_gives_exactly_the_expected_rows(clip_dir, tmp_path):
    make_workdir(tmp_path, seeds=tuple(range(8)))
    catalog = write_catalog(tmp_path / "styles.csv")
    proc = _spawn(tmp_path, clip_dir, catalog)
    parts = tmp_path / "embeddings"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and any(parts.rglob("part-*.parquet")):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_mid_run = proc.returncode == -signal.SIGKILL
    print("killed mid run:", killed_mid_run)
    rerun = score(tmp_path, cfg(clip_dir, catalog))
    n_images = 2 * (len(ARTISTS) * 2 + 1) * 8
    assert rerun.n_images == n_images
    if killed_mid_run:
        assert rerun.n_embedded < n_images  # the finished parts were kept
    got = counts(tmp_path / "atelier.duckdb")
    assert got["images"] == n_images
    assert got["image_scores"] == (n_images - 16) * 6 + 16
    assert_no_duplicates(tmp_path / "atelier.duckdb")
    from evaluator.embedding.embed import load_embeddings
    from evaluator.workspace.workdir import Workdir

    ids, _ = load_embeddings(Workdir.at(tmp_path), rerun.model)
    assert len(ids) == n_images


def test_min_effect_from_the_cli_decides_which_real_changes_count(clip_dir, tmp_path):
    """`--min-effect` reaches the store: a rescore with a huge margin keeps every change
    the CI called real, says why in verdict_reason, and adds no row; a typo is refused."""
    make_workdir(tmp_path)
    catalog = write_catalog(tmp_path / "styles.csv")
    runner = CliRunner()
    args = ["score", "--workdir", str(tmp_path), "--model", str(clip_dir), "--catalog", str(catalog),
            "--compare", "base:ft", "--bootstrap", "100", "--num-workers", "0", "-q"]
    query = "SELECT artist_id, metric, delta, ci_low, ci_high, verdict, verdict_reason FROM comparisons ORDER BY ALL"

    def rows():
        con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True)
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()

    assert runner.invoke(main, [*args, "--min-effect", "all=0"]).exit_code == 0
    exact = rows()
    decided = [r for r in exact if r[5] in ("gained", "lost")]
    assert decided and all(r[6] is None for r in decided)
    result = runner.invoke(main, [*args, "--min-effect", "all=1000"])
    assert result.exit_code == 0, result.output
    wide = rows()
    assert [r[:5] for r in wide] == [r[:5] for r in exact]  # the same cells and numbers, no new row
    for before, after in zip(exact, wide, strict=True):
        if before[5] in ("gained", "lost"):
            assert after[5] == "kept" and after[6] == f"|delta| {abs(after[2]):.3g} < min_effect 1000"
        else:
            assert after[5:] == before[5:]
    bad = runner.invoke(main, [*args, "--min-effect", "refrence_similarity=0.1"])
    assert bad.exit_code != 0 and "did you mean reference_similarity" in bad.output
    assert rows() == wide
