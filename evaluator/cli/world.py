"""`atelier world`: the procedural world whose truth is known (evaluator.world).

Thin commands over the library: ``list`` reads the painter's table, ``build`` remakes the
world model folder (``evaluator.world.build.build_world``), ``sheet`` writes a contact
sheet of paintings beside the model's images, ``measure`` prints retrieval and speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from evaluator.cli.options import quiet_option


@click.group("world")
def world_group() -> None:
    """A procedural world whose truth is known: its artists, its base model, measurements."""


@world_group.command("list")
def world_list() -> None:
    """List the world's artists: id, name, role, mark, palette."""
    from evaluator.world.painter import WORLD_ARTISTS

    for a in WORLD_ARTISTS:
        palette = " ".join("#" + "".join(f"{c:02x}" for c in color) for color in a.palette)
        click.echo(f"{a.artist_id:18} {a.name:18} {a.role:9} {a.mark:10} {palette}")


def _model_option():
    return click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False, exists=True, path_type=Path),
                        help="World model folder (default: the committed one).")


@world_group.command("build")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the pipeline and world.json to (replaced whole when done).")
@click.option("--steps", "unet_steps", type=int, default=None, help="UNet optimizer steps (default: WorldConfig's).")
@click.option("--vae-steps", type=int, default=None, help="VAE pre-training steps (default: WorldConfig's).")
@click.option("--images-per-artist", type=int, default=None, help="Training paintings per known artist.")
@click.option("--seed", type=int, default=None, help="Seed of the paintings' order, weights and draws.")
@quiet_option()
def world_build(out_dir: Path, unet_steps: int | None, vae_steps: int | None, images_per_artist: int | None,
                seed: int | None, quiet: bool) -> None:
    """Remake the world model: paint, pre-train the VAE, train the UNet (atelier's trainer)."""
    from evaluator.world.build import WorldConfig, build_world, read_world_json

    given = {"unet_steps": unet_steps, "vae_steps": vae_steps, "images_per_artist": images_per_artist, "seed": seed}
    config = WorldConfig(**{k: v for k, v in given.items() if v is not None})
    out = build_world(out_dir, config, progress=not quiet)
    record = read_world_json(out)
    click.echo(f"{out}: {record['n_training_images']} paintings, UNet loss {record['unet']['final_train_loss']}, "
               f"{record['seconds']} s")


@world_group.command("sheet")
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@_model_option()
@click.option("--per-side", type=int, default=4, show_default=True, help="Paintings and generations per artist.")
def world_sheet(out_png: Path, model_dir: Path | None, per_side: int) -> None:
    """Write a contact sheet: per artist, fresh paintings beside the model's images."""
    from evaluator.world.build import world_model_path
    from evaluator.world.measure import contact_sheet, load_world_pipeline
    from evaluator.world.painter import artist_ids

    pipe = load_world_pipeline(model_dir or world_model_path())
    click.echo(contact_sheet(pipe, artist_ids(), out_png, per_side=per_side))


@world_group.command("measure")
@_model_option()
@click.option("--per-artist", type=int, default=8, show_default=True, help="Images (and paintings) per artist.")
@click.option("--lora", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A LoRA file to load into the model first.")
def world_measure(model_dir: Path | None, per_artist: int, lora: Path | None) -> None:
    """Print retrieval top-1 of the model's images (random CLIP) and its images/s, as JSON."""
    from evaluator.world.build import world_model_path
    from evaluator.world.measure import measure_world

    click.echo(json.dumps(measure_world(model_dir or world_model_path(), per_artist=per_artist, lora=lora), indent=2))
