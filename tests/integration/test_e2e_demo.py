"""End to end: the demo's path fills every table, every image is there, a rerun is a no-op."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
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
    result = CliRunner().invoke(main, ["demo", "--random-weights", "--workdir", str(pipeline_workdir), "--artists", "8", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "generated 0" in result.output
    after = _snapshot(pipeline_workdir)
    assert {t: n for t, (n, _) in after.items()} == {t: n for t, (n, _) in before.items()}
    for table in ("images", "image_scores", "artist_scores", "comparisons", "artist_neighbors"):
        assert after[table] == before[table], table
    images_after = {p: p.stat().st_mtime_ns for p in (pipeline_workdir / "images").rglob("*.png")}
    assert images_after == images_before


def test_demo_ends_with_the_verdict_counts_the_store_holds(pipeline_workdir):
    from evaluator.demo.summary import summarize_store

    output = (pipeline_workdir / "demo-output.txt").read_text()
    summaries = summarize_store(pipeline_workdir / "atelier.duckdb")
    assert {s.finetune for s in summaries} == {"ft-lora", "ft-weights"}
    con = duckdb.connect(str(pipeline_workdir / "atelier.duckdb"), read_only=True)
    try:
        for s in summaries:
            total = con.execute("SELECT count(*) FROM comparisons WHERE finetune = ? AND metric = ?",
                                [s.finetune, s.metric]).fetchone()[0]
            assert sum(s.counts.values()) == total > 0
            row = f"{s.finetune} vs {s.base}"
            line = next(line for line in output.splitlines() if line.strip().startswith(row))
            assert line.split()[-4:] == [str(s.counts[v]) for v in ("gained", "lost", "kept", "undecided")]
    finally:
        con.close()


def _printed_next_steps(output: str) -> list[list[str]]:
    import shlex

    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next steps"))
    steps = []
    for line in lines[start + 1:]:
        if not line.startswith("  atelier "):
            break
        steps.append(shlex.split(line.strip()))
    return steps


@pytest.mark.slow
def test_every_next_step_the_demo_prints_runs_as_printed(pipeline_workdir):
    """Each printed command runs with exit 0; the dashboard serves its health page."""
    output = (pipeline_workdir / "demo-output.txt").read_text()
    steps = _printed_next_steps(output)
    assert [step[1] for step in steps] == ["dashboard", "search", "sql", "score"]
    atelier = str(Path(sys.executable).with_name("atelier"))
    for step in steps:
        if step[1] == "dashboard":
            _serves_health(atelier, step)
            continue
        done = subprocess.run([atelier, *step[1:]], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (step, done.stdout, done.stderr)


def _serves_health(atelier: str, step: list[str]) -> None:
    import urllib.request

    process = subprocess.Popen([atelier, *step[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            try:
                with urllib.request.urlopen("http://127.0.0.1:8501/_stcore/health", timeout=2) as reply:
                    assert reply.status == 200
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("the dashboard did not answer on 127.0.0.1:8501 within 90 s")
    finally:
        process.terminate()
        process.wait(timeout=30)
        _stops_answering("http://127.0.0.1:8501/_stcore/health")


def _stops_answering(url: str) -> None:
    """Stopping `atelier dashboard` stops the streamlit it started (it was left orphaned,
    holding port 8501, when only the parent got SIGTERM)."""
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                time.sleep(0.5)
        except OSError:
            return
    raise AssertionError(f"{url} still answers 30 s after `atelier dashboard` was stopped")
