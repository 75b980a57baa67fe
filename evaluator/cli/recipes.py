"""`atelier recipes parse | show | validate | train`: characters mixed from several prompt parts.

``parse`` reads an A1111 prompt and writes nothing; ``show`` and ``validate`` read a
recipes TOML file and the catalog; ``train`` reads them and a checkpoints TOML and writes
images, a training dataset and reference records into the workdir
(``evaluator.recipes_train``). The library is ``catalog.recipes``; only click loads here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

CATALOG_HELP = "Catalog CSV the recipes name ids of [default: $ATELIER_CATALOG or the packaged styles.csv]."


def _catalog(catalog_path: Path | None):
    from catalog.model import load_catalog

    return load_catalog(catalog_path)


@click.group("recipes")
def recipes_group() -> None:
    """Character recipes: parse A1111 prompts, show and validate recipe files, train a token."""


@recipes_group.command("parse")
@click.argument("prompt")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Also list the prompt A1111 samples at each of this many steps.")
def parse_command(prompt: str, steps: int | None) -> None:
    """Read PROMPT in A1111 syntax; print its canonical form and parts as JSON.

    \b
    Example:
      atelier recipes parse "a (knight:1.2) in [red:blue:0.5] armor, [cat|dog] ears" --steps 6
    """
    from catalog.recipes.grammar import parse, render
    from catalog.recipes.parts import Leaf, to_json

    parts = parse(prompt)
    result: dict = {"a1111": render(parts), "parts": to_json(parts)}
    if steps is not None:
        from catalog.recipes.schedule import step_schedule

        schedule = step_schedule(parts, steps)
        # each step's prompt with its weights only: what the text encoder sees at that step
        result["steps"] = [render([Leaf(text, weight) for text, weight in schedule.prompts[index]])
                           for index in schedule.per_step]
    click.echo(json.dumps(result, ensure_ascii=False, indent=1))


@recipes_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help=CATALOG_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per recipe (id, version, a1111, parts).")
def show_command(file: Path, catalog_path: Path | None, as_json: bool) -> None:
    """Print each recipe of FILE in its canonical A1111 form (what goes into prompts and PNGs)."""
    from catalog.recipes.file import load_recipes
    from catalog.recipes.parts import to_json

    for recipe in load_recipes(file, _catalog(catalog_path)):
        if as_json:
            click.echo(json.dumps({"id": recipe.recipe_id, "name": recipe.name, "version": recipe.version,
                                   "uses": list(recipe.uses), "a1111": recipe.prompt,
                                   "parts": to_json(recipe.parts)}, ensure_ascii=False))
        else:
            click.echo(f"{recipe.recipe_id} v{recipe.version} ({recipe.name})\n  {recipe.prompt}")


@recipes_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help=CATALOG_HELP)
def validate_command(file: Path, catalog_path: Path | None) -> None:
    """List every problem of a recipes FILE as file:line: error [field]: message; exit 1 on errors."""
    from catalog.recipes.file import validate_recipes_text

    report = validate_recipes_text(file.read_bytes(), _catalog(catalog_path), str(file))
    click.echo(report.format())
    if report.errors:
        sys.exit(1)
