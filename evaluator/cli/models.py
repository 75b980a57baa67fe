"""`atelier models random`: a random-weight open_clip folder to score with offline.

Reads nothing; writes one folder (``open_clip_config.json`` + safetensors weights) that
``--model DIR`` loads like any local CLIP (evaluator.testing.tiny_clip builds it). Every
offline check needs a model and no hub is reachable: this is the one-line way to get one.
Scores from it are only structural (the pipeline runs), never a statement about a style.
"""

from __future__ import annotations

from pathlib import Path

import click

# The default architecture: a few hundred thousand parameters (a 4 MB folder) that embeds
# hundreds of images a second on one core. `ViT-B-32` is realistic compute, 605 MB.
TINY = "tiny"


def build_random_model(arch: str, out: Path, seed: int) -> Path:
    """Write a random-weight model folder of ``arch`` (``tiny`` or an open_clip name) to ``out``."""
    from evaluator.errors import InputError
    from evaluator.testing.tiny_clip import build_random_clip, build_tiny_clip

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} exists and is not an empty folder: pick a new folder (nothing was written)")
    if arch == TINY:
        return build_tiny_clip(out, seed=seed)
    try:
        return build_random_clip(out, base=arch.replace("/", "-"), seed=seed)
    except ValueError as exc:  # unknown architecture, with close names
        raise InputError(f"{exc} (or {TINY!r} for the small default)") from exc


@click.group("models")
def models_group() -> None:
    """CLIP models for offline use: a random-weight folder to score with."""


@models_group.command("random")
@click.argument("arch", default=TINY)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write (new or empty).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Weight seed: the same seed gives the same weights and model key.")
def models_random(arch: str, out: Path, seed: int) -> None:
    """Write a random-weight open_clip model folder (ARCH: an open_clip architecture, or tiny).

    \b
    Score with it as `--model DIR`. Its numbers only show that the pipeline runs:
    random weights know nothing about a style. In-memory alternative without a
    folder: `--model ViT-B-32 --pretrained random`.
    """
    folder = build_random_model(arch, out, seed)
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    click.echo(f"wrote random-weight {arch} (seed {seed}, {size:.1f} MB) to {folder}; score with --model {folder}")
    click.echo("note: random weights: scores from this model are only structural", err=True)
