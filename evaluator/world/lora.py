"""LoRAs on the world model, trained by the product's trainer: planted gains and losses.

* teach: paintings of artist Y captioned with Y's name (Y = the newcomer): the base
  learns a style it never saw, and should keep the others;
* swap: paintings of artist Y captioned with artist X's name: X's prompt should paint Y
  (the base "forgets" X).

Both train with prior preservation (DreamBooth's remedy for a fine-tune bleeding into what
it should keep): a few paintings of every other known artist, under their own names, beside
the target. ``LORA_RECIPE`` is the recipe measured on the committed model (README section
"A world whose truth is known"): the swap makes X's prompt lose X's style; the prior keeps
most other artists' nearest-prototype and retrieval verdicts "kept". On the committed
model (whose VAE learned every world artist's paintings) the teach LoRA draws the
newcomer's marks but not its palette: gained on reference similarity only. On the earlier
model (VAE on the known artists only, which could not decode the newcomer's colours) no
recipe taught it anything. Reference similarity still sees small, real drifts of the
other artists.
Paintings use seeds from ``LORA_SEED_START`` on: inside the training range, disjoint from
the base's training seeds and from the fresh reference seeds.

Reads the world model folder; writes a kohya dataset folder and the trainer's run
folder inside the given workdir.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# LoRA datasets paint seeds LORA_SEED_START.. (the base trained on 0..images_per_artist-1).
LORA_SEED_START = 100_000


@dataclass(frozen=True)
class LoraRecipe:
    """How a world LoRA is trained (the fields of TrainingConfig it sets); see the module for what it does."""

    rank: int = 8  # one palette + mark in a ~1M-parameter UNet; not yet shown to be enough (see the module)
    learning_rate: float = 2e-3  # high for a LoRA: the base was trained from scratch at 1e-3
    steps: int = 150  # optimizer steps: ~110 s at batch 8 on this loaded machine (the aim was <= 40 s)
    batch_size: int = 8  # per step
    resolution: int = 32  # the world model's side
    images: int = 32  # paintings in the dataset
    train_text_encoder: bool = False  # UNet only, as most shared LoRAs
    # Prior preservation: this many paintings of every other known artist, under their own
    # names, train beside the target (0: none). 4 each (44-48 in all): the demo's cells matched
    # 84 of 102 with it, 75 without, 79 with the base's own generations as the prior instead
    # (earlier model); on the committed one 86, and 83 with 8 each at 150 steps; 95 once
    # verdicts had a min_effect (93 with 8 each, 94 with 8 each at 300 steps).
    prior_images: int = 4
    target_repeats: int = 3  # the target's kohya repeats: 96 of ~140 items a pass, so the prior does not drown it

    def __post_init__(self) -> None:
        from evaluator.errors import InputError

        if self.prior_images < 0 or self.target_repeats < 1:
            raise InputError(f"prior_images must be >= 0 and target_repeats >= 1 but are {self.prior_images}, "
                             f"{self.target_repeats}")


LORA_RECIPE = LoraRecipe()


def paint_lora_dataset(folder: Path, painted_artist: str, caption_artist: str, recipe: LoraRecipe = LORA_RECIPE) -> Path:
    """A kohya folder ``<target_repeats>_<caption_artist>/`` of ``recipe.images`` paintings by ``painted_artist``,
    each captioned "a painting in the style of <caption_artist's name>", and with a prior, one
    ``1_<artist>/`` of ``recipe.prior_images`` per other known artist, under that artist's name."""
    from catalog.templates import load_templates
    from evaluator.world.painter import artist_ids, world_artist

    template = load_templates()["style"]
    name = world_artist(caption_artist).name
    world_artist(painted_artist)  # an unknown id is refused before anything is written
    paint_concept(folder / f"{recipe.target_repeats}_{caption_artist}", painted_artist,
                  range(LORA_SEED_START, LORA_SEED_START + recipe.images), recipe.resolution,
                  lambda seed: template.render(name))
    if recipe.prior_images:
        prior_seeds = range(LORA_SEED_START + recipe.images, LORA_SEED_START + recipe.images + recipe.prior_images)
        for other in artist_ids("known"):
            if other != caption_artist:
                own = template.render(world_artist(other).name)
                paint_concept(folder / f"1_{other}", other, prior_seeds, recipe.resolution, lambda seed, own=own: own)
    return folder


def paint_concept(concept: Path, artist_id: str, seeds: Iterable[int], side: int, caption: Callable[[int], str]) -> None:
    """One kohya concept folder: ``artist_id``'s painting for each seed (``<seed>.png``) and its
    caption (``<seed>.txt``, ``caption(seed)``). The world's training set and its LoRAs' datasets."""
    from evaluator.world.painter import paint

    concept.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        paint(artist_id, seed, side).save(concept / f"{seed:07d}.png")
        (concept / f"{seed:07d}.txt").write_text(caption(seed) + "\n", encoding="utf-8")


def lora_training_config(base: Path, data: Path, output_name: str, recipe: LoraRecipe = LORA_RECIPE, seed: int = 0):
    """The TrainingConfig of a world LoRA (what ``atelier train --method lora`` would be given)."""
    from evaluator.training.config import TrainingConfig

    side = recipe.resolution
    return TrainingConfig(
        method="lora", base=str(base), dataset=str(data), output_name=output_name, rank=recipe.rank,
        resolution=side, min_bucket_reso=side, max_bucket_reso=side, bucket_reso_steps=side,
        train_batch_size=recipe.batch_size, max_train_steps=recipe.steps, learning_rate=recipe.learning_rate,
        save_every=recipe.steps, validation_fraction=0.05, seed=seed, train_text_encoder=recipe.train_text_encoder,
    ).validate("world lora")


def train_world_lora(base: str | Path, workdir: str | Path, painted_artist: str, caption_artist: str,
                     output_name: str, recipe: LoraRecipe = LORA_RECIPE, progress: bool = False) -> Path:
    """Train a LoRA on ``painted_artist``'s paintings captioned as ``caption_artist``; return its
    diffusers LoRA file (``pytorch_lora_weights.safetensors`` of the last saved step)."""
    from evaluator.training.formats import DIFFUSERS_LORA_NAME
    from evaluator.training.loop import train

    data = paint_lora_dataset(Path(workdir) / "world-data" / output_name, painted_artist, caption_artist, recipe)
    result = train(lora_training_config(Path(base), data, output_name, recipe), workdir, progress=progress)
    return result.saved[-1].step_dir / DIFFUSERS_LORA_NAME
