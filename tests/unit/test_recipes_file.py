"""Recipes TOML files: the A1111 form of a recipe, and every problem reported with its line."""

from __future__ import annotations

import pytest

from catalog.model import Artist
from catalog.recipes.file import (
    RecipeError,
    find_recipe,
    load_recipes,
    recipe_entry,
    validate_recipes_text,
    with_recipes,
)
from catalog.recipes.grammar import parse
from catalog.recipes.parts import Leaf

CATALOG = [
    Artist("claude-monet", "Claude Monet"),
    Artist("akira-coffee-curry", "Akira (coffee curry)", kind="character", tag="akira_(coffee_curry)"),
    Artist("hatsune-miku", "Hatsune Miku", kind="character", tag="hatsune_miku", franchise="vocaloid"),
]

GOOD = b"""
[[recipe]]
name = "Ember Knight"
version = 2
description = "a knight in red armor"

[[recipe.part]]
id = "hatsune-miku"
form = "tag"
weight = 1.2

[[recipe.part]]
text = "red armor (dented)"
to = 0.5

[[recipe.part]]
text = "blue cape"
from = 10

[[recipe.part]]
prompt = "(glowing eyes:1.1)"

[[recipe.part]]
alternate = ["cat ears", { id = "akira-coffee-curry", form = "tag" }]
"""


def _report(text: bytes):
    return validate_recipes_text(text, CATALOG, "r.toml")


def test_a_recipe_renders_to_its_a1111_form():
    report = _report(GOOD)
    assert report.errors == []
    (recipe,) = report.recipes
    assert recipe.recipe_id == "ember-knight" and recipe.version == 2
    assert recipe.prompt == (
        r"(hatsune_miku:1.2), [red armor \(dented\)::0.5], [blue cape:10], (glowing eyes:1.1), "
        r"[cat ears|akira_\(coffee_curry\)]")
    assert recipe.uses == ("hatsune-miku", "akira-coffee-curry")
    assert parse(recipe.prompt) == recipe.parts  # the round trip


def test_a_recipe_is_a_character_row_of_the_catalog():
    (recipe,) = _report(GOOD).recipes
    entry = recipe_entry(recipe)
    assert (entry.artist_id, entry.kind, entry.sources, entry.aliases) == (
        "ember-knight", "character", ("recipe",), ("Ember Knight",))
    assert entry.name == recipe.prompt and "v2" in entry.notes


def test_with_recipes_adds_rows_and_load_refuses_a_bad_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_bytes(GOOD)
    rows = with_recipes(CATALOG, good)
    assert [r.artist_id for r in rows] == [a.artist_id for a in CATALOG] + ["ember-knight"]
    assert find_recipe(load_recipes(good, CATALOG), "Ember Knight").recipe_id == "ember-knight"
    bad = tmp_path / "bad.toml"
    bad.write_bytes(GOOD.replace(b"version = 2", b"version = 0"))
    with pytest.raises(RecipeError, match=r"bad.toml:4: error \[version\]"):
        load_recipes(bad, CATALOG)


def _problems(text: bytes) -> list[str]:
    return [p.format() for p in sorted(_report(text).errors, key=lambda p: p.line)]


def test_every_problem_is_reported_with_its_line_and_field():
    text = b"""[[recipe]]
name = "Bad"
versoin = 1

[[recipe.part]]
id = "claude-monnet"
wieght = 2

[[recipe.part]]
text = "x"
from = 1.5

[[recipe.part]]
prompt = "[a:b]"

[[recipe.part]]
id = "claude-monet"
form = "tag"

[[recipe.part]]
text = "late"
from = 0.7
to = 0.2

[[recipe.part]]
text = "a"
id = "claude-monet"
"""
    problems = _problems(text)
    assert problems == [
        "1: error [version]: version must be an integer >= 1 but is None (it is required: a new version is a new prompt)",
        "3: error [versoin]: unknown recipe key 'versoin'; did you mean 'version'? "
        "(known: name, id, version, description, franchise, separator, part)",
        "6: error [id]: unknown catalog id 'claude-monnet'; did you mean 'claude-monet'?",
        "7: error [wieght]: unknown part key 'wieght'; did you mean 'weight'? "
        "(known: id, text, prompt, alternate, weight, from, to, form)",
        "11: error [from]: from = 1.5 is not a fraction in [0, 1] (write an integer for a step number)",
        "14: error [prompt]: prompt: column 5: [a:b] needs a step: [a:b:N], [a:N] or [a::N] "
        "(write \\: for a literal colon); near '[a:b]'",
        "18: error [form]: form = 'tag' but catalog row 'claude-monet' (Claude Monet) has no tag",
        "22: error [from]: from 0.7 is not before to 0.2: the part would never show",
        "25: error: a part has exactly one of id, text, prompt or alternate but has id, text",
    ]


def test_ids_must_be_new_slugs_and_unique():
    text = b"""[[recipe]]
name = "Claude Monet"
version = 1
[[recipe.part]]
text = "x"

[[recipe]]
name = "Twin"
version = 1
[[recipe.part]]
text = "x"

[[recipe]]
name = "Other twin"
id = "twin"
version = 1
[[recipe.part]]
text = "y"

[[recipe]]
name = "Bad id"
id = "Bad Id"
version = 1
[[recipe.part]]
text = "y"
"""
    problems = _problems(text)
    assert problems[0].startswith("2: error [id]: recipe id 'claude-monet' is already a catalog id")
    assert problems[1] == "15: error [id]: duplicate recipe id 'twin' (first on line 8)"
    assert problems[2].startswith("22: error [id]: id 'Bad Id' is not a slug")
    assert len(problems) == 3


@pytest.mark.parametrize(("text", "expected"), [
    (b"[[recipe]]\nname = \"x\"\nversion = 1\n", "1: error [part]: recipe 'x' has no parts"),
    (b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\nalternate = [\"a\"]\n",
     "5: error [alternate]: alternate must list at least 2 options"),
    (b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\ntext = \"a\"\nweight = true\n",
     "6: error [weight]: weight must be a number but is True"),
    (b"[[recipe]]\nname = \"=HYPERLINK()\"\nversion = 1\n[[recipe.part]]\ntext = \"a\"\n",
     "2: error [name]: name '=HYPERLINK()' starts like a spreadsheet formula"),
    (b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\ntext = \"a\"\nto = -2\n",
     "6: error [to]: to = -2 is not a step number"),
    (b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\ntext = \"a\n", "5: error: not valid TOML"),
    (b"[[recipes]]\nname = \"x\"\n", "0: error [recipes]: unknown top-level key 'recipes'; did you mean 'recipe'?"),
])
def test_single_problems(text, expected):
    assert _problems(text)[0].startswith(expected)


def test_open_ends_are_no_bounds():
    text = b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\ntext = \"a\"\nfrom = 0.0\nto = 1.0\n"
    assert _report(text).recipes[0].prompt == "a"
    step = b"[[recipe]]\nname = \"x\"\nversion = 1\n[[recipe.part]]\ntext = \"a\"\nto = 1\n"
    assert _report(step).recipes[0].prompt == "[a::1]"  # an integer is a step number, as in A1111


def test_plan_escapes_names_but_not_recipe_prompts():
    from catalog.plan import make_plan
    from catalog.templates import load_templates

    (recipe,) = _report(GOOD).recipes
    rows = [Artist("qan-t", "00 Qan[t]", kind="character"), CATALOG[1], recipe_entry(recipe)]
    units = make_plan(rows, load_templates(), ["character-name"], [0], ["base"])
    prompts = {u.artist_id: u.prompt for u in units}
    assert prompts["qan-t"] == r"00 Qan\[t\], solo, full body, simple background"
    assert prompts["akira-coffee-curry"].startswith(r"Akira \(coffee curry\), solo")
    assert prompts["ember-knight"] == f"{recipe.prompt}, solo, full body, simple background"
    assert parse(prompts["qan-t"]) == (Leaf("00 Qan[t], solo, full body, simple background"),)
