"""The demo on the world (issue 18): the store's own verdicts recover the planted truth.

`atelier demo` trains two LoRAs on the committed world model: ft-learns on the newcomer
(planted: gained), ft-forgets painting another artist for one known artist's name
(planted: lost). These tests read the store the demo wrote, not only its CSV."""

from __future__ import annotations

import csv

import duckdb
import pytest
from click.testing import CliRunner

from evaluator.cli.main import main
from evaluator.demo.truth import REFERENCE_METRICS, planted_cells
from evaluator.demo.world_demo import FORGETS, LEARNS, WorldDemoConfig, plants_of
from evaluator.scoring.metrics import default_min_effects
from evaluator.world.painter import artist_ids

pytestmark = pytest.mark.slow


def _comparisons(workdir) -> dict[tuple[str, str, str], str]:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT finetune, artist_id, metric, verdict FROM comparisons WHERE base = 'base'").fetchall()
    finally:
        con.close()
    return {(f, a, m): v for f, a, m, v in rows}


def test_the_planted_lost_artist_is_lost_on_every_reference_metric(world_workdir):
    """ft-forgets paints another artist's works for one artist's name: the store says lost."""
    verdicts = _comparisons(world_workdir)
    forgotten = WorldDemoConfig().forgotten
    for metric in REFERENCE_METRICS:
        assert verdicts[(FORGETS, forgotten, metric)] == "lost", metric


def test_the_planted_gain_is_found_and_nine_in_ten_planted_cells_match(world_workdir):
    """The issue's bar, read from the store's own comparisons: ft-learns gains the newcomer
    on reference_similarity (and loses it on no reference metric), and at least 90% of all
    planted (fine-tune, artist, reference metric) cells get their planted verdict."""
    verdicts = _comparisons(world_workdir)
    newcomer = artist_ids("newcomer")[0]
    assert verdicts[(LEARNS, newcomer, "reference_similarity")] == "gained"
    assert all(verdicts[(LEARNS, newcomer, m)] != "lost" for m in REFERENCE_METRICS)
    plants = plants_of(WorldDemoConfig())
    cells = planted_cells(plants, artist_ids())
    matched = sum(verdicts.get((f, a, m)) == expected for f, a, m, expected in cells)
    assert matched >= 0.9 * len(cells), f"{matched} of {len(cells)}"


def test_every_verdict_in_the_store_follows_the_rule_with_its_metric_s_min_effect(world_workdir):
    """gained/lost = the CI excludes 0 and |delta| >= the metric's min_effect; a real change
    under it is kept and its verdict_reason says so (the demo's drift of other artists)."""
    con = duckdb.connect(str(world_workdir / "atelier.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT metric, delta, ci_low, ci_high, higher_is_better, verdict, verdict_reason "
                           "FROM comparisons").fetchall()
    finally:
        con.close()
    margins = default_min_effects()
    under = 0
    for metric, delta, lo, hi, higher, verdict, reason in rows:
        if lo is None:
            assert verdict == "undecided" and reason
            continue
        real = lo > 0 or hi < 0
        counts = real and abs(delta) >= margins[metric]
        assert verdict == (("gained" if (delta > 0) == higher else "lost") if counts else "kept"), (metric, delta, lo, hi)
        if real and not counts:
            under += 1
            assert reason == f"|delta| {abs(delta):.3g} < min_effect {margins[metric]:g}"
    assert under > 0  # the drift a LoRA gives every prompt is there, and is kept
    # the demo's output says how many of the headline metric's kept are such changes
    con = duckdb.connect(str(world_workdir / "atelier.duckdb"), read_only=True)
    small = dict(con.execute("SELECT finetune, count(*) FROM comparisons WHERE metric = 'reference_similarity' "
                             "AND verdict_reason LIKE '%min_effect%' GROUP BY 1 ORDER BY 1").fetchall())
    con.close()
    listed = ", ".join(f"{n} of {f}" for f, n in sorted(small.items()))
    assert f"smaller than the metric's min_effect (verdict_reason says so): {listed}" in \
        (world_workdir / "demo-output.txt").read_text()


def test_every_planted_cell_has_a_verdict_in_the_store(world_workdir):
    """No planted cell is silently missing: each (fine-tune, world artist, reference metric)
    has a comparison with a verdict (the truth table is only as good as its coverage)."""
    verdicts = _comparisons(world_workdir)
    cells = [(f, a, m) for f in (LEARNS, FORGETS) for a in artist_ids() for m in REFERENCE_METRICS]
    assert all(verdicts.get(c) in {"gained", "lost", "kept"} for c in cells), [c for c in cells if c not in verdicts]


def test_demo_truth_csv_is_the_store_and_the_output_says_how_much_matched(world_workdir):
    verdicts = _comparisons(world_workdir)
    with open(world_workdir / "demo-truth.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["finetune", "artist_id", "metric", "expected", "measured"]
    assert len(rows) == 2 * len(artist_ids()) * len(REFERENCE_METRICS)
    for row in rows:
        assert row["measured"] == verdicts.get((row["finetune"], row["artist_id"], row["metric"]), "missing")
    matched = sum(r["expected"] == r["measured"] for r in rows)
    assert f"planted truth: {matched} of {len(rows)} cells match" in (world_workdir / "demo-output.txt").read_text()


def test_a_second_world_demo_trains_nothing_and_adds_no_row(world_workdir):
    con = duckdb.connect(str(world_workdir / "atelier.duckdb"), read_only=True)
    tables = ("images", "reference_images", "image_scores", "artist_scores", "comparisons")
    before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    con.close()
    loras = {p: p.stat().st_mtime_ns for p in (world_workdir / "models").glob("*.safetensors")}
    result = CliRunner().invoke(main, ["demo", "--workdir", str(world_workdir)])
    assert result.exit_code == 0, result.output
    assert "generated 0" in result.output and "train ft-" not in result.output
    con = duckdb.connect(str(world_workdir / "atelier.duckdb"), read_only=True)
    assert {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables} == before
    con.close()
    assert {p: p.stat().st_mtime_ns for p in (world_workdir / "models").glob("*.safetensors")} == loras
