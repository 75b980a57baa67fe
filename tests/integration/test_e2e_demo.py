"""End to end: the demo's path fills every table, every image is there, a rerun is a no-op."""

from __future__ import annotations

import hashlib

import duckdb
from click.testing import CliRunner
from PIL import Image

from evaluator.cli.main import main

TABLES = ["artists", "templates", "checkpoints", "runs", "images", "image_scores",
          "artist_scores", "checkpoint_scores", "artist_neighbors", "comparisons"]


def _snapshot(workdir) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every table."""
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        snap = {}
        for table in TABLES:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            digest = hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()
            snap[table] = (len(rows), digest)
        return snap
    finally:
        con.close()


def test_demo_says_scores_are_meaningless_and_how_to_open_the_dashboard(pipeline_workdir):
    output = (pipeline_workdir / "demo-output.txt").read_text()
    assert "meaningless" in output
    assert f"atelier dashboard --workdir {pipeline_workdir}" in output


def test_demo_fills_every_table_without_errors(pipeline_workdir):
    con = duckdb.connect(str(pipeline_workdir / "atelier.duckdb"), read_only=True)
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        assert all(n > 0 for n in counts.values()), counts
        # 8 artists x 2 templates x 2 seeds x 3 checkpoints, plus 2 seeds x 3 checkpoints of baseline.
        assert counts["images"] == 8 * 2 * 2 * 3 + 2 * 3
        assert counts["checkpoints"] == 3
        assert con.execute("SELECT count(*) FROM images WHERE error IS NOT NULL").fetchone()[0] == 0
        verdicts = {row[0] for row in con.execute("SELECT DISTINCT verdict FROM comparisons").fetchall()}
        assert verdicts <= {"gained", "lost", "kept"} and verdicts
        pairs = {tuple(r) for r in con.execute("SELECT DISTINCT base, finetune FROM comparisons").fetchall()}
        assert pairs == {("base", "ft-lora"), ("base", "ft-weights")}
        # CIs bracket their point estimates.
        bad = con.execute(
            "SELECT count(*) FROM artist_scores WHERE n > 1 AND NOT (ci_low <= value + 1e-9 AND value <= ci_high + 1e-9)"
        ).fetchone()[0]
        assert bad == 0
    finally:
        con.close()


def test_every_generated_image_is_present_with_its_parameters(pipeline_workdir):
    con = duckdb.connect(str(pipeline_workdir / "atelier.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "SELECT path, thumb_path, seed, prompt, checkpoint FROM images WHERE source = 'generated'"
        ).fetchall()
    finally:
        con.close()
    assert rows
    for path, thumb_path, seed, prompt, checkpoint in rows:
        image_file = pipeline_workdir / path
        with Image.open(image_file) as image:
            image.load()
            parameters = image.info["parameters"]
        assert parameters.startswith(prompt)
        assert f"Seed: {seed}" in parameters and f"Model: {checkpoint}" in parameters
        assert (pipeline_workdir / thumb_path).is_file()


def test_second_demo_run_makes_no_image_and_adds_no_row(pipeline_workdir):
    before = _snapshot(pipeline_workdir)
    images_before = {p: p.stat().st_mtime_ns for p in (pipeline_workdir / "images").rglob("*.png")}
    result = CliRunner().invoke(main, ["demo", "--workdir", str(pipeline_workdir), "--artists", "8", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "generated 0" in result.output
    after = _snapshot(pipeline_workdir)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    for table in ("images", "image_scores", "artist_scores", "comparisons", "artist_neighbors"):
        assert after[table] == before[table], table
    images_after = {p: p.stat().st_mtime_ns for p in (pipeline_workdir / "images").rglob("*.png")}
    assert images_after == images_before
