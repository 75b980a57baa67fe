"""`recipes train` on a tiny SD 1.x pipeline: images, a token, its catalog row and references,
and the token accepted by plan and generate."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image
from support.gen import tiny_pipeline, write_toml

from catalog.model import load_catalog
from catalog.plan import make_plan
from catalog.recipes.file import load_recipes, with_recipes
from catalog.templates import load_templates
from evaluator.generation.pngmeta import read_generation_info
from evaluator.generation.runner import GenerateConfig, generate
from evaluator.recipes.train import RecipeTrainConfig, train_recipe
from evaluator.workspace.manifest import read_manifests

pytestmark = pytest.mark.slow

RECIPE = """
[[recipe]]
name = "Ember Knight"
version = 1
[[recipe.part]]
id = "claude-monet"
weight = 1.2
[[recipe.part]]
text = "red armor"
to = 0.5
[[recipe.part]]
alternate = ["cat ears", "fox ears"]
"""


def test_recipes_train_makes_a_token_that_plan_and_generate_take(tmp_path_factory, tmp_path):
    sd1 = tiny_pipeline(tmp_path_factory, "sd1")
    checkpoints = write_toml(tmp_path / "checkpoints.toml", f'[[checkpoint]]\nname = "base"\nsource = "{sd1}"\n')
    recipes = write_toml(tmp_path / "recipes.toml", RECIPE)
    workdir = tmp_path / "wd"
    config = RecipeTrainConfig(
        "ember-knight", recipes, workdir, "base", checkpoints, images=2, seed=5, width=64, height=64, steps=2,
        initializer_token="a", max_train_steps=1, progress=False,
        training={"min_bucket_reso": 64, "validation_inference_steps": 1},
    )
    result = train_recipe(config)
    # the images: the recipe's A1111 prompt, seeds recorded in each PNG and in the manifests
    (recipe,) = load_recipes(recipes, load_catalog())
    infos = [read_generation_info(Image.open(p)) for p in result.images]
    assert [i["seed"] for i in infos] == [5, 6] and {i["prompt"] for i in infos} == {recipe.prompt}
    assert sorted((result.dataset / "1_ember-knight").glob("*.txt"))[0].read_text() == "<ember-knight>\n"
    # the token: a recipe row of its own, in token.toml and in the workdir's catalog.csv
    (token,) = load_recipes(result.recipes_file, load_catalog())
    assert (token.recipe_id, token.prompt) == ("ember-knight-v1-token", "<ember-knight>")
    rows = {a.artist_id: a for a in load_catalog(result.catalog_file)}
    assert rows["ember-knight"].name == recipe.prompt and rows["ember-knight-v1-token"].kind == "character"
    # its references are the recipe's images (same bytes)
    frame = read_manifests(workdir / "manifests")
    refs = frame[(frame["source"] == "reference") & (frame["artist_id"] == token.recipe_id)]
    assert set(refs["sha256"]) == {hashlib.sha256(p.read_bytes()).hexdigest() for p in result.images}
    # plan and generate take the token with the trained checkpoint
    assert result.checkpoint == "ember-knight-v1-ti@step-000001"
    entries = [a for a in with_recipes(load_catalog(), result.recipes_file) if a.artist_id == token.recipe_id]
    units = make_plan(entries, load_templates(), ["character-name"], [0], [result.checkpoint],
                      width=64, height=64, steps=2)
    assert units[0].prompt.startswith("<ember-knight>")
    summary = generate(units, checkpoints, workdir, GenerateConfig(progress=False))
    assert (summary.done, summary.failed) == (1, 0)
