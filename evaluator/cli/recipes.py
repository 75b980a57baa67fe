"""`atelier recipes parse | show | validate | train`: characters mixed from several prompt parts.

``parse`` reads an A1111 prompt and writes nothing; ``show`` and ``validate`` read a
recipes TOML file and the catalog; ``train`` reads them and a checkpoints TOML and writes
images, a training dataset and reference records into the workdir
(``evaluator.recipes.train``). The library is ``catalog.recipes``; only click loads here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from evaluator.cli.options import quiet_option, workdir_option

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


def _train_options(values: tuple[str, ...]) -> dict:
    """``--train-option key=value`` pairs; the value read as TOML (numbers, booleans), else text."""
    import tomllib

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--train-option")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


@recipes_group.command("train")
@click.argument("name")
@click.option("--recipes", "recipes_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Recipes TOML that holds NAME (an id or a name).")
@workdir_option(help="The workdir (made if missing): images, dataset, training outputs, token.toml, catalog.csv.",
                create=True)
@click.option("--base", required=True, help="Checkpoint name (in --checkpoints) to make the images and train on.")
@click.option("--checkpoints", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Checkpoints TOML that defines --base.")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help=CATALOG_HELP)
@click.option("--images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images of the recipe to train on (seeds SEED..SEED+N-1).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="First seed.")
@click.option("--template", default="{name}", show_default=True, help="Prompt of the images; {name} is the recipe.")
@click.option("--width", type=int, default=512, show_default=True)
@click.option("--height", type=int, default=512, show_default=True)
@click.option("--steps", type=int, default=25, show_default=True, help="Sampler steps of each image.")
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option("--negative-prompt", default="", help="Negative prompt of the images.")
@click.option("--initializer-token", default="person", show_default=True,
              help="Existing word the token's embedding starts from.")
@click.option("--max-train-steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--learning-rate", type=float, default=5e-4, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps.")
@click.option("--train-option", "train_options", multiple=True, metavar="KEY=VALUE",
              help="Any other `atelier train` config field, e.g. --train-option resolution=512 (repeatable).")
@quiet_option()
def train_command(name: str, quiet: bool, train_options: tuple[str, ...], **options) -> None:
    """Generate a recipe's images, train a textual-inversion token on them, add the token as a catalog row.

    \b
    Example:
      atelier recipes train ember-knight --recipes recipes.toml -w runs/r --base base --checkpoints ckpts.toml
    """
    from evaluator.recipes.train import RecipeTrainConfig, train_recipe

    options["catalog"] = options.pop("catalog_path")
    config = RecipeTrainConfig(recipe=name, progress=not quiet, training=_train_options(train_options), **options)
    result = train_recipe(config)
    click.echo(f"{result.recipe_id} v{result.version}: {len(result.images)} images (seeds {result.seeds[0]}.."
               f"{result.seeds[-1]}), token {result.token} trained -> checkpoint {result.checkpoint} "
               f"({result.checkpoints_file})")
    click.echo(f"token row {result.token_entry}: {result.recipes_file} (as a recipe), {result.catalog_file} "
               "(the catalog with it); its references are the recipe's images")
    click.echo(f"next: atelier plan --recipes {result.recipes_file} --text {result.token_entry} "
               f"--templates character-name --checkpoints '{result.checkpoint}' --out plan.jsonl")
