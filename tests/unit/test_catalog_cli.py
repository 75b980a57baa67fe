"""The catalog commands through `atelier` (click's CliRunner on evaluator.cli.main.main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.plan import read_plan
from evaluator.cli.main import main

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "catalogs"

COMMANDS = [
    ["catalog"], ["catalog", "build"], ["catalog", "validate"], ["catalog", "list"],
    ["catalog", "search"], ["templates"], ["plan"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from evaluator.cli.main import main\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'duckdb', 'torch', 'catalog.build') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "catalog.build" not in out.stdout and "pandas" not in out.stdout


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_search_and_list_formats():
    result = run("catalog", "search", "monet", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    monet = next(r for r in rows if r["artist_id"] == "claude-monet")
    assert monet["born"] == 1840 and "wikiart" in monet["sources"]
    result = run("catalog", "list", "--movement", "Ukiyo-e", "--format", "csv")
    assert result.exit_code == 0 and "katsushika-hokusai" in result.stdout
    assert result.stdout.startswith("artist_id,name,")
    result = run("catalog", "list", "--sample", "7", "--seed", "2")
    again = run("catalog", "list", "--sample", "7", "--seed", "2")
    assert result.exit_code == 0 and result.stdout == again.stdout
    assert len(result.stdout.strip().splitlines()) == 8  # header + 7 rows


def test_limit_keeps_the_first_rows_of_the_selection():
    full = run("catalog", "list", "--movement", "Impressionism", "--format", "csv")
    limited = run("catalog", "list", "--movement", "Impressionism", "--format", "csv", "--limit", "3")
    assert limited.exit_code == 0, limited.output
    assert limited.stdout.splitlines() == full.stdout.splitlines()[:4]  # header + the first 3
    assert run("catalog", "list", "--limit", "0").exit_code == 2


def test_validate_without_a_path_checks_the_catalog_in_use():
    result = run("catalog", "validate", env={"ATELIER_CATALOG": str(CORPUS / "duplicate_id.csv")})
    assert result.exit_code == 1 and "duplicate_id.csv:4:1:" in result.output
    rows = (REPO / "styles.csv").read_bytes().count(b"\n") - 1  # the catalog has no multi-line cells
    assert run("catalog", "validate", "--quiet").output.strip().endswith(f" {rows} row(s)")


def test_catalog_path_from_env_and_option():
    env = {"ATELIER_CATALOG": str(CORPUS / "ok_full.csv")}
    result = run("catalog", "list", "--format", "csv", env=env)
    assert result.exit_code == 0 and result.stdout.count("\n") == 3
    result = run("catalog", "list", "--catalog", str(CORPUS / "ok_minimal.csv"), "--format", "csv")
    assert "mucha" in result.stdout
    bad = run("catalog", "list", "--catalog", str(CORPUS / "duplicate_id.csv"))
    assert bad.exit_code == 1 and "duplicate_id.csv:4:1:" in bad.output


def test_validate_command():
    ok = run("catalog", "validate", str(REPO / "styles.csv"))
    assert ok.exit_code == 0 and "0 error(s)" in ok.output
    warn = run("catalog", "validate", str(CORPUS / "bom.csv"))
    assert warn.exit_code == 0 and "warning" in warn.output
    bad = run("catalog", "validate", str(CORPUS / "semicolon_delimiter.csv"))
    assert bad.exit_code == 1 and "wrong delimiter" in bad.output


def test_templates_command(tmp_path):
    result = run("templates")
    assert result.exit_code == 0 and "null" in result.output and "baseline" in result.output
    mine = tmp_path / "t.toml"
    mine.write_text('oops = "by {artist}"\n', encoding="utf-8")
    result = run("templates", "--file", str(mine))
    assert result.exit_code == 1 and "oops" in result.output and "{artist}" in result.output


def test_plan_command_and_shards(tmp_path):
    args = ["plan", "--movement", "Ukiyo-e", "--sample", "5", "--templates", "style,portrait,null",
            "--seeds", "0-1", "--checkpoints", "base,ft", "--steps", "4"]
    full = run(*args, "--out", str(tmp_path / "plan.parquet"))
    assert full.exit_code == 0, full.output
    assert "plan: 44 unit(s)" in full.output  # 2 ckpt x (2 templates x 5 artists + 1 baseline) x 2 seeds
    units = read_plan(tmp_path / "plan.parquet")
    assert len(units) == 44 and {u.steps for u in units} == {4}
    ids = []
    for rank in range(3):
        part = run(*args, "--out", str(tmp_path / f"r{rank}.jsonl"), "--rank", str(rank), "--world-size", "3")
        assert part.exit_code == 0, part.output
        ids += [u.unit_id for u in read_plan(tmp_path / f"r{rank}.jsonl")]
    assert sorted(ids) == sorted(u.unit_id for u in units)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--height", "500"], "height must be divisible by 8 but is 500"),
        (["--templates", "stlye"], "Did you mean 'style'"),
        (["--seeds", "x"], "seeds must be integers"),
        (["--rank", "1"], "--rank and --world-size go together"),
        (["--rank", "3", "--world-size", "3"], "rank must be in [0, 3) but is 3"),
        (["--recognized", "perhaps"], "recognized must be"),
    ],
)
def test_plan_errors(tmp_path, extra, message):
    result = run("plan", "--sample", "3", "--checkpoints", "base", "--out", str(tmp_path / "p.jsonl"), *extra)
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "p.jsonl").exists()


def test_missing_catalog_is_a_clear_error(tmp_path):
    from catalog.model import load_catalog

    with pytest.raises(FileNotFoundError, match="not found"):
        load_catalog(tmp_path / "nope.csv")
    result = run("catalog", "list", "--catalog", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1 and "nope.csv not found" in result.output


def test_plan_refuses_checkpoints_the_checkpoints_file_does_not_define(tmp_path):
    toml = tmp_path / "ck.toml"
    toml.write_text('[[checkpoint]]\nname = "base"\nsource = "org/model"\n'
                    '[[checkpoint]]\nname = "ft-lora"\nbase = "base"\n', encoding="utf-8")
    args = ["plan", "--templates", "style", "--seeds", "0", "--kind", "artist", "--sample", "2",
            "--checkpoints-file", str(toml), "--out", str(tmp_path / "plan.parquet")]
    refused = CliRunner().invoke(main, [*args, "--checkpoints", "base,ft-lra"])
    assert refused.exit_code == 2
    assert "'ft-lra' not defined" in refused.output and "did you mean 'ft-lora'" in refused.output
    assert not (tmp_path / "plan.parquet").exists()
    done = CliRunner().invoke(main, [*args, "--checkpoints", "base,ft-lora"])
    assert done.exit_code == 0, done.output
    assert {u.checkpoint for u in read_plan(tmp_path / "plan.parquet")} == {"base", "ft-lora"}
