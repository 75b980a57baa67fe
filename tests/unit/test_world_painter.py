"""The world's painters and catalog: deterministic, distinct, valid as a catalog."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.errors import InputError
from evaluator.world.catalog import world_catalog_path, world_catalog_rows
from evaluator.world.painter import (
    FRESH_SEED_START,
    MARKS,
    WORLD_ARTISTS,
    artist_ids,
    fresh_seeds,
    paint,
    paint_array,
    world_artist,
)


def test_roles_and_uniqueness():
    assert len(WORLD_ARTISTS) >= 16
    assert len(artist_ids("known")) == 12
    assert len(artist_ids("newcomer")) == 1
    assert len(artist_ids("control")) >= 3
    assert all(a.known == (a.role == "known") for a in WORLD_ARTISTS)
    for attribute in ("artist_id", "name", "mark", "palette"):
        values = [getattr(a, attribute) for a in WORLD_ARTISTS]
        assert len(set(values)) == len(values), attribute
    assert {a.mark for a in WORLD_ARTISTS} <= set(MARKS)


def test_paint_is_deterministic_and_new_for_every_seed():
    for artist in WORLD_ARTISTS:
        first = np.asarray(paint(artist.artist_id, 7))
        assert first.shape == (32, 32, 3)
        assert np.array_equal(first, np.asarray(paint(artist.artist_id, 7)))
        assert not np.array_equal(first, np.asarray(paint(artist.artist_id, 8))), artist.artist_id
    assert paint("orla-vennick", 0, size=64).size == (64, 64)


def test_paintings_keep_their_palette():
    """Every pixel of a painting (blur aside) is near one of the artist's three colours."""
    artist = world_artist("tamsin-quell")
    pixels = paint_array(artist.artist_id, 3).reshape(-1, 3) * 255
    palette = np.array(artist.palette, dtype=np.float32)
    nearest = np.min(np.linalg.norm(pixels[:, None, :] - palette[None], axis=2), axis=1)
    assert np.median(nearest) < 25


def test_artists_are_told_apart_by_their_mean_colour():
    """A naive nearest-centroid on mean colour + colour spread already separates the artists
    (so an image encoder with random weights has something to go on)."""

    def feature(artist_id, seed):
        pixels = paint_array(artist_id, seed).reshape(-1, 3)
        return np.concatenate([pixels.mean(0), pixels.std(0)])

    ids = artist_ids()
    centroids = np.stack([np.mean([feature(a, s) for s in range(8)], axis=0) for a in ids])
    correct = 0
    for index, artist_id in enumerate(ids):
        for seed in fresh_seeds(4):
            guess = int(np.argmin(np.linalg.norm(centroids - feature(artist_id, seed), axis=1)))
            correct += guess == index
    assert correct / (4 * len(ids)) >= 0.9


def test_bad_input_is_refused_with_suggestions():
    with pytest.raises(InputError, match="did you mean orla-vennick"):
        paint("orla-venick", 0)
    with pytest.raises(InputError, match="size must be"):
        paint("orla-vennick", 0, size=4)
    with pytest.raises(InputError, match="role must be"):
        artist_ids("famous")


def test_fresh_seeds_are_outside_the_training_range():
    assert min(fresh_seeds(5)) == FRESH_SEED_START
    assert fresh_seeds(2, offset=10) == [FRESH_SEED_START + 10, FRESH_SEED_START + 11]


def test_world_catalog_is_committed_valid_and_current():
    from catalog.model import load_catalog

    loaded = load_catalog(world_catalog_path())
    assert loaded == sorted(world_catalog_rows(), key=lambda a: a.artist_id)
    assert {a.artist_id for a in loaded} == set(artist_ids())
    assert all(a.kind == "artist" and a.sources == ("world",) for a in loaded)


def test_world_list_command_lists_every_artist():
    from click.testing import CliRunner

    from evaluator.cli.world import world_group

    result = CliRunner().invoke(world_group, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(WORLD_ARTISTS)
    assert lines[0].split()[0] == WORLD_ARTISTS[0].artist_id and "newcomer" in result.output


def test_lora_dataset_with_a_prior_keeps_the_swapped_artist_out_and_seeds_apart(tmp_path):
    """A swap LoRA's prior holds every known artist but the one whose name it takes over, each
    under its own name; the target's and the prior's seeds never meet, nor reach the references'."""
    import dataclasses

    from evaluator.world.lora import LORA_RECIPE, LORA_SEED_START, paint_lora_dataset
    from evaluator.world.painter import FRESH_SEED_START, artist_ids

    recipe = dataclasses.replace(LORA_RECIPE, images=3, prior_images=2, target_repeats=2)
    folder = paint_lora_dataset(tmp_path / "swap", "ilse-marrow", "saffi-kettering", recipe)
    concepts = sorted(p.name for p in folder.iterdir())
    assert "2_saffi-kettering" in concepts and "1_saffi-kettering" not in concepts
    assert sorted(c for c in concepts if c.startswith("1_")) == sorted(
        f"1_{a}" for a in artist_ids("known") if a != "saffi-kettering")
    target = {int(p.stem) for p in (folder / "2_saffi-kettering").glob("*.png")}
    prior = {int(p.stem) for p in (folder / "1_ilse-marrow").glob("*.png")}
    assert len(target) == 3 and len(prior) == 2 and not target & prior
    assert min(target | prior) >= LORA_SEED_START and max(target | prior) < FRESH_SEED_START
    text = (folder / "1_ilse-marrow" / f"{min(prior):07d}.txt").read_text().strip()
    assert text == "a painting in the style of Ilse Marrow"



def test_lora_recipe_refuses_a_negative_prior():
    from evaluator.world.lora import LoraRecipe

    with pytest.raises(InputError, match="prior_images must be >= 0"):
        LoraRecipe(prior_images=-1)
