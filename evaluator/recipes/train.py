"""``atelier recipes train``: a recipe's images, a textual-inversion token trained on them,
and the token as a catalog row whose references are those images.

Reads the recipes file, the catalog and a checkpoints TOML; writes, inside the workdir only:
the images (through the generation runner: ``images/``, ``manifests/``, ``runs/``), the
training dataset ``recipes/<id>/v<version>/dataset/`` (a kohya folder: each image with a
caption holding the token), the training outputs (``training/<output>/``, through
``evaluator.training.loop.train``), and ``recipes/<id>/v<version>/``'s ``token.toml`` (the
token as a recipe) and ``catalog.csv`` (the catalog with the recipe and the token rows),
whose token row gets the recipe's images as reference works. Numbered steps:

1. load the recipe and check everything (catalog ids, the base, the token) before a write;
2. generate ``images`` images of the recipe's prompt (seeds ``seed``..``seed+images-1``,
   recorded in the manifests and each PNG);
3. write the dataset folder (copies of the images; a rerun rewrites the same files);
4. train the token (``method = textual_inversion``); a failure stops here, so no catalog
   row names a token that was not made;
5. register the token: ``token.toml``, ``catalog.csv`` and the references.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.recipes.file import Recipe, find_recipe, load_recipes, recipe_entry
from evaluator.errors import InputError, StateError


@dataclass
class RecipeTrainConfig:
    """What `atelier recipes train` was asked for. Defaults are cheap enough for a CPU try."""

    recipe: str  # the recipe's id or name in ``recipes_file``
    recipes_file: Path
    workdir: Path
    base: str  # a checkpoint name of ``checkpoints``: the images are made and the token trained on it
    checkpoints: Path
    catalog: Path | None = None  # None: $ATELIER_CATALOG or the packaged styles.csv
    # 8 images: textual inversion learns a concept from 3-5 (the TI paper); a few more
    # average over the recipe's alternations and seeds.
    images: int = 8
    seed: int = 0  # first seed; image i has seed + i
    # The recipe's prompt alone: the token is to stand for exactly what the recipe makes.
    template: str = "{name}"
    width: int = 512
    height: int = 512
    steps: int = 25  # sampler steps of each image (SD's usual quality/time point)
    guidance: float = 7.5
    negative_prompt: str = ""
    # A word the token's embedding starts from: a character is a person more often than not.
    initializer_token: str = "person"
    max_train_steps: int = 500  # a TI token settles in a few hundred steps at lr 5e-4
    learning_rate: float = 5e-4  # diffusers' textual_inversion example
    resolution: int | None = None  # None: the images' width
    device: str = "cpu"
    progress: bool = True
    training: dict[str, Any] = field(default_factory=dict)  # more TrainingConfig fields


@dataclass
class RecipeTrainResult:
    recipe_id: str
    version: int
    token: str
    seeds: list[int]
    images: list[Path]
    dataset: Path
    checkpoint: str = ""  # the trained step as a checkpoint name (<output>@step-NNNNNN)
    checkpoints_file: Path | None = None  # where that checkpoint is defined
    token_entry: str = ""  # the token's catalog id
    recipes_file: Path | None = None  # token.toml
    catalog_file: Path | None = None  # catalog.csv


def token_of(recipe: Recipe) -> str:
    """The token named after the character: ``<recipe-id>`` (one word, as TI needs)."""
    return f"<{recipe.recipe_id}>"


def output_dir(workdir: Path, recipe: Recipe) -> Path:
    return Path(workdir) / "recipes" / recipe.recipe_id / f"v{recipe.version}"


def train_recipe(config: RecipeTrainConfig) -> RecipeTrainResult:
    """Steps 1-5 of the module docstring."""
    from catalog.model import load_catalog

    catalog = load_catalog(config.catalog)  # 1. load and check
    recipe = find_recipe(load_recipes(config.recipes_file, catalog), config.recipe)
    units = _plan(recipe, config)
    training = _training_config(recipe, config, output_dir(config.workdir, recipe) / "dataset")
    images = _generate(units, config)  # 2.
    result = RecipeTrainResult(recipe.recipe_id, recipe.version, token_of(recipe), [u.seed for u in units],
                               images, Path(training.dataset))
    _write_dataset(images, result.dataset / f"1_{recipe.recipe_id}", result.token)  # 3.
    result.checkpoint, result.checkpoints_file = _train(training, config)  # 4.
    _register(recipe, catalog, result, config)  # 5.
    return result


def _plan(recipe: Recipe, config: RecipeTrainConfig) -> list:
    """The units of the recipe's images: one template, ``images`` seeds, the base checkpoint."""
    from catalog.plan import make_plan
    from catalog.templates import Template

    if config.images < 1:
        raise InputError(f"images must be >= 1 but is {config.images}")
    template = Template("recipe", config.template, "the recipe's prompt", "atelier recipes train",
                        kinds=("character",))
    return make_plan([recipe_entry(recipe)], {"recipe": template}, ["recipe"],
                     list(range(config.seed, config.seed + config.images)), [config.base],
                     width=config.width, height=config.height, steps=config.steps, guidance=config.guidance,
                     negative_prompt=config.negative_prompt)


def _training_config(recipe: Recipe, config: RecipeTrainConfig, dataset: Path):
    """The TrainingConfig of the token, validated before any image is made."""
    try:
        from evaluator.training.config import from_mapping
    except ImportError as exc:  # pragma: no cover - the training stage ships with atelier
        raise StateError(f"textual-inversion training is not available in this install ({exc})") from exc

    fields: dict[str, Any] = {
        "method": "textual_inversion", "base": config.base, "checkpoints": str(config.checkpoints),
        "dataset": str(dataset), "output_name": f"{recipe.recipe_id}-v{recipe.version}-ti",
        "placeholder_token": token_of(recipe), "initializer_token": config.initializer_token,
        "max_train_steps": config.max_train_steps, "save_every": config.max_train_steps,
        "learning_rate": config.learning_rate, "resolution": config.resolution or config.width,
        "device": config.device, **config.training,
    }
    return from_mapping(fields, where="recipes train").validate()


def _generate(units: list, config: RecipeTrainConfig) -> list[Path]:
    """Make (or find, on a rerun) the recipe's images; refuse to go on if any failed."""
    from evaluator.generation.runner import GenerateConfig, generate
    from evaluator.workspace.workdir import Workdir

    # retry_failed: a rerun after a failure (a broken checkpoint since replaced) makes them again
    summary = generate(units, config.checkpoints, config.workdir,
                       GenerateConfig(device=config.device, progress=config.progress, retry_failed=True))
    if summary.failed:
        first = next(iter(summary.errors.items()))
        raise StateError(f"{summary.failed} of the recipe's {len(units)} images failed (e.g. {first[0]}: "
                         f"{first[1]}); nothing was trained")
    images = Workdir.at(config.workdir).images
    paths = [images / unit.relpath() for unit in units]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise StateError(f"{len(missing)} recipe image(s) are recorded but missing, e.g. {missing[0]}")
    return paths


def _write_dataset(images: list[Path], folder: Path, token: str) -> None:
    """A kohya folder ``1_<id>/``: each image and a caption holding the token (stale files removed)."""
    from catalog.atomic import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    wanted = {image.name for image in images} | {Path(image.name).with_suffix(".txt").name for image in images}
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in wanted:
            stale.unlink()
    for image in images:
        shutil.copyfile(image, folder / image.name)
        atomic_write_text(folder / Path(image.name).with_suffix(".txt").name, token + "\n")


def _train(training, config: RecipeTrainConfig) -> tuple[str, Path]:
    """Train the token (resuming a run this recipe started before); its checkpoint and file."""
    from evaluator.generation.checkpoints import WORKDIR_CHECKPOINTS
    from evaluator.training.loop import train, training_dir
    from evaluator.training.state import latest_step_dir
    from evaluator.training.steps import step_checkpoint_name

    resume = latest_step_dir(training_dir(config.workdir, training.output_name)) is not None
    result = train(training, config.workdir, resume=resume, progress=config.progress)
    if result.final_step < training.max_train_steps:
        raise StateError(f"training {training.output_name} stopped at step {result.final_step} of "
                         f"{training.max_train_steps}; rerun to resume it")
    return step_checkpoint_name(training.output_name, result.final_step), Path(config.workdir) / WORKDIR_CHECKPOINTS


def token_recipe_text(recipe: Recipe, result: RecipeTrainResult) -> str:
    """``token.toml``: the trained token as a one-part recipe (a catalog row like any recipe)."""
    import tomli_w

    seeds = f"{result.seeds[0]}-{result.seeds[-1]}" if len(result.seeds) > 1 else str(result.seeds[0])
    table = {
        "name": f"{recipe.name} (token)", "id": f"{recipe.recipe_id}-v{recipe.version}-token", "version": 1,
        "description": (f"textual inversion {result.token} of recipe {recipe.recipe_id} v{recipe.version}, trained "
                        f"on {len(result.images)} images (seeds {seeds}); generate with checkpoint "
                        f"{result.checkpoint}"),
        "part": [{"text": result.token}],
    }
    if recipe.franchise:
        table["franchise"] = recipe.franchise
    header = ("# Written by `atelier recipes train`: the token as a recipe. Use it with\n"
              f"#   atelier plan --recipes {Path('recipes') / recipe.recipe_id / f'v{recipe.version}' / 'token.toml'}"
              f" --checkpoints '{result.checkpoint}' ...\n")
    return header + tomli_w.dumps({"recipe": [table]})


def _register(recipe: Recipe, catalog: list, result: RecipeTrainResult, config: RecipeTrainConfig) -> None:
    """Write ``token.toml`` and ``catalog.csv``, and import the images as the token's references."""
    import tempfile

    from catalog.atomic import atomic_write_text
    from catalog.model import write_catalog
    from evaluator.ingest.references import add_references
    from evaluator.workspace.workdir import Workdir

    folder = output_dir(config.workdir, recipe)
    result.recipes_file = folder / "token.toml"
    atomic_write_text(result.recipes_file, token_recipe_text(recipe, result))
    (token,) = load_recipes(result.recipes_file, catalog)
    result.token_entry = token.recipe_id
    result.catalog_file = folder / "catalog.csv"
    write_catalog([*catalog, recipe_entry(recipe), recipe_entry(token)], result.catalog_file)
    # The importer copies from a folder outside the workdir (it refuses nested sources).
    with tempfile.TemporaryDirectory(prefix="atelier-recipe-refs-") as tmp:
        for image in result.images:
            shutil.copyfile(image, Path(tmp) / image.name)
        add_references(Workdir.at(config.workdir), tmp, artist=token.recipe_id, catalog_path=result.catalog_file)
