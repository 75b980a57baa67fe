"""`atelier recipes parse | show | validate` and `plan --recipes` through the real CLI."""

from __future__ import annotations

import json

from click.testing import CliRunner

from catalog.model import Artist, write_catalog
from evaluator.cli.main import main

RECIPES = """[[recipe]]
name = "Ember Knight"
version = 3
[[recipe.part]]
id = "claude-monet"
weight = 1.2
[[recipe.part]]
text = "red armor"
to = 0.5
"""


def _files(tmp_path):
    catalog = tmp_path / "styles.csv"
    write_catalog([Artist("claude-monet", "Claude Monet")], catalog)
    recipes = tmp_path / "recipes.toml"
    recipes.write_text(RECIPES)
    return catalog, recipes


def test_parse_prints_the_canonical_form_parts_and_steps():
    result = CliRunner().invoke(main, ["recipes", "parse", "((knight)), [red:blue:0.5] [cat|dog]", "--steps", "4"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["a1111"] == "(knight:1.21), [red:blue:0.5] [cat|dog]"
    assert out["parts"][0] == {"text": "knight", "weight": 1.21}
    assert out["steps"] == ["(knight:1.21), red cat", "(knight:1.21), red cat", "(knight:1.21), red dog",
                            "(knight:1.21), blue cat"]


def test_parse_refuses_bad_syntax_in_one_line():
    result = CliRunner().invoke(main, ["recipes", "parse", "a [b:c]"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: prompt: column 7: [a:b] needs a step: [a:b:N], [a:N] or [a::N] (write \\: for a literal colon); "
        "near 'a [b:c]'"]


def test_show_validate_and_plan_with_recipes(tmp_path):
    catalog, recipes = _files(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(main, ["recipes", "show", str(recipes), "--catalog", str(catalog)])
    assert shown.output == "ember-knight v3 (Ember Knight)\n  (Claude Monet:1.2), [red armor::0.5]\n"
    valid = runner.invoke(main, ["recipes", "validate", str(recipes), "--catalog", str(catalog)])
    assert valid.exit_code == 0 and "0 error(s), 1 recipe(s)" in valid.output
    plan = tmp_path / "plan.jsonl"
    planned = runner.invoke(main, ["plan", "--catalog", str(catalog), "--recipes", str(recipes), "--kind", "character",
                                   "--templates", "character-name", "--checkpoints", "base", "--out", str(plan)])
    assert planned.exit_code == 0, planned.output
    (unit,) = [json.loads(line) for line in plan.read_text().splitlines()]
    assert (unit["artist_id"], unit["prompt"]) == (
        "ember-knight", "(Claude Monet:1.2), [red armor::0.5], solo, full body, simple background")


def test_validate_exits_1_and_names_the_line(tmp_path):
    catalog, recipes = _files(tmp_path)
    recipes.write_text(RECIPES.replace('id = "claude-monet"', 'id = "claude-monay"'))
    result = CliRunner().invoke(main, ["recipes", "validate", str(recipes), "--catalog", str(catalog)])
    assert result.exit_code == 1
    assert f"{recipes}:5: error [id]: unknown catalog id 'claude-monay'; did you mean 'claude-monet'?" in result.output
