"""Careless but common (issue 12, item 7): a typo in --workdir, a plan far too large.

`atelier score --workdir typo` made a new store, printed "scored 0 new images" and
exited 0. Now every command that reads a workdir refuses one that does not exist,
suggesting close names and creating nothing; the commands that make a workdir
(generate, import, references add, demo) still do. `atelier plan --seeds 0-99999999`
ran into gigabytes without a word; now the unit count is estimated first and a plan
above --max-units (1,000,000) is refused unless --yes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from support.hardening import write_catalog

from evaluator.cli.main import main

READ_COMMANDS = [
    ["score", "--model", "x"],
    ["embed", "--model", "x"],
    ["index", "build", "--model", "x"],
    ["sql", "SELECT 1"],
    ["search", "--model", "x", "--text", "a cat"],
    ["migrate"],
    ["serve"],
    ["dashboard"],
    ["report", "--out", "report.html"],
]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_that_reads_a_workdir_refuses_a_missing_one_and_names_close_ones(tmp_path, command):
    (tmp_path / "my-workdir").mkdir()
    (tmp_path / "my-workdir" / "atelier.duckdb").write_bytes(b"")
    before = _tree(tmp_path)
    typo = tmp_path / "my-workdr"

    result = CliRunner().invoke(main, [*command[:2 if command[0] == "index" else 1], "-w", str(typo),
                                       *command[2 if command[0] == "index" else 1:]])

    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: workdir {typo} does not exist") and result.output.count("\n") == 1, \
        result.output
    assert f"did you mean {tmp_path / 'my-workdir'}?" in result.output
    assert _tree(tmp_path) == before and not typo.exists()


def test_the_commands_that_make_a_workdir_still_make_one(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (16, 16), "red").save(src / "a.png")
    result = CliRunner().invoke(main, ["import", str(src), "-w", str(tmp_path / "new" / "wd"), "-q",
                                       "--catalog", str(write_catalog(tmp_path / "styles.csv"))])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "wd" / "atelier.duckdb").is_file()
    # generate and demo declare the same (their runs are covered by their own tests)
    for name in ("generate", "demo"):
        command = main.get_command(None, name)
        option = next(p for p in command.params if p.name == "workdir")
        assert option.callback is None, f"{name} must be able to make its workdir"


@pytest.fixture()
def catalog(tmp_path):
    return write_catalog(tmp_path / "styles.csv")


def test_a_huge_plan_is_refused_before_it_is_made(tmp_path, catalog):
    out = tmp_path / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--catalog", str(catalog), "--seeds", "0-99999999",
                                       "--checkpoints", "base,ft", "--out", str(out)])
    assert result.exit_code == 1, result.output
    # 2 checkpoints x (4 artists x style + 1 baseline) x 100,000,000 seeds
    assert "this plan would have 1,000,000,000 units" in result.output and "--yes" in result.output
    assert not out.exists()


def test_a_plan_above_max_units_needs_yes(tmp_path, catalog):
    out = tmp_path / "plan.parquet"
    args = ["plan", "--catalog", str(catalog), "--seeds", "0-3", "--checkpoints", "base,ft", "--out", str(out),
            "--max-units", "39"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "would have 40 units" in refused.output and not out.exists()
    written = CliRunner().invoke(main, [*args, "--yes"])
    assert written.exit_code == 0, written.output
    assert "plan: 40 unit(s)" in written.output and out.is_file()


@pytest.mark.parametrize(("templates", "seeds", "checkpoints"), [
    ("style,null", "0", ["base"]), ("style", "0-3,10", ["a", "b", "c"]), ("null", "5-9", ["base"]),
    ("style,null", "0,2-4,7", ["base", "ft"]),
])
def test_the_unit_estimate_equals_the_plan_made(catalog, templates, seeds, checkpoints):
    from catalog.model import load_catalog
    from catalog.plan import estimate_units, make_plan, parse_seeds
    from catalog.templates import load_templates

    artists, known = load_catalog(catalog), load_templates()
    made = make_plan(artists, known, templates, parse_seeds(seeds), checkpoints)
    assert estimate_units(artists, known, templates, seeds, checkpoints) == len(made)
