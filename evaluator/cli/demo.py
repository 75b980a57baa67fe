"""`atelier demo`: the whole pipeline on the world (evaluator.demo.world_demo), or on tiny
random-weight models with the catalog's artists (evaluator.demo.random_weights).

Writes tiny models, a plan, images and a scored store into the workdir; reads nothing else.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from evaluator.cli.options import workdir_option

REAL_MODELS_HINT = """\
With real weights (on a machine that reaches the model hub, or with local files):
  atelier plan --templates style,portrait,null --seeds 0-3 --checkpoints sd15,my-ft --out plan.parquet
  atelier generate --plan plan.parquet --checkpoints checkpoints.toml --workdir runs/sd15
  atelier score --workdir runs/sd15 --model ViT-L-14 --pretrained openai
(checkpoints.toml names hub ids such as runwayml/stable-diffusion-v1-5, a local folder,
 a single .safetensors file, or a base plus LoRA files; see the README.)"""


@click.command("demo")
@workdir_option(help="Where the models, images and store go.", default=Path("demo"), create=True)
@click.option("--random-weights", is_flag=True,
              help="Instead of the world: the catalog's own artists on tiny random-weight models "
                   "(every score meaningless; shows the machinery on real names).")
@click.option("--artists", "n_artists", type=click.IntRange(2, 2000), default=24, show_default=True,
              help="With --random-weights: how many catalog artists to sample, stratified over movements.")
@click.option("--seeds", type=click.IntRange(2, 16), default=None,
              help="Seeds per (artist, template, checkpoint); the bootstrap needs at least 2 "
                   "[default: 6 for the world, 3 with --random-weights].")
def demo_command(workdir: Path, random_weights: bool, n_artists: int, seeds: int | None) -> None:
    """Run train -> plan -> generate -> embed -> score on a world whose truth is known.

    The base is atelier's world model, a tiny diffusion model trained from scratch on
    twelve procedural artists (committed, remade by `atelier world build`). The demo trains
    two LoRAs with planted answers (ft-learns gains a newcomer, ft-forgets loses one
    artist), scores them against fresh paintings, and checks the store's verdicts against
    the planted truth (DIR/demo-truth.csv). Everything is local; about 3 minutes on 2 cores.
    Running it again trains nothing, makes no new image and adds no row.
    """
    if random_weights:
        _random_weights_demo(workdir, n_artists, seeds or 3)
        return
    from evaluator.demo.summary import format_summaries, summarize_store
    from evaluator.demo.truth import format_truth
    from evaluator.demo.world_demo import WorldDemoConfig, run_world_demo

    click.echo("atelier demo: a world whose truth is known. The base model paints 12 procedural artists;")
    click.echo("two LoRAs are trained now with planted answers, and the verdicts are checked against them.\n")
    config = WorldDemoConfig() if seeds is None else WorldDemoConfig(seeds=tuple(range(seeds)))
    result = run_world_demo(workdir, config, echo=click.echo)
    for line in result.warnings:
        click.echo(line)
    _echo_run(result)
    click.echo("what each fine-tune kept, gained and lost (image metrics against fresh paintings; "
               "text-side metrics use a random CLIP text tower and are structural only):")
    for line in format_summaries(summarize_store(result.store)):
        click.echo("  " + line)
    click.echo("")
    for line in format_truth(result.truth):
        click.echo(line)
    click.echo(f"(one row per planted cell: {result.workdir / 'demo-truth.csv'})")
    from evaluator.world.catalog import world_catalog_path

    _echo_next_steps(result.workdir, world_catalog_path())


def _echo_run(result) -> None:
    click.echo(
        f"\nunits {result.n_units}: generated {result.generated}, already there {result.skipped}, "
        f"failed {result.failed}"
    )
    click.echo("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    click.echo(f"store: {result.store}\n")


def _echo_next_steps(workdir: Path, catalog: Path | None = None) -> None:
    click.echo("\nnext steps (each runs as printed):")
    for line in next_steps(workdir, catalog):
        click.echo("  " + line)
    click.echo("\n" + REAL_MODELS_HINT)


def _random_weights_demo(workdir: Path, n_artists: int, seeds: int) -> None:
    from evaluator.demo.random_weights import DemoConfig, run_random_demo
    from evaluator.demo.summary import format_summaries, summarize_store

    click.echo("atelier demo: tiny RANDOM-WEIGHT models, so every score below is meaningless;")
    click.echo("it exercises the pipeline and fills a store to browse.\n")
    result = run_random_demo(workdir, DemoConfig(n_artists=n_artists, seeds=tuple(range(seeds))), echo=click.echo)
    _echo_run(result)
    click.echo("what each fine-tune kept, gained and lost (meaningless here: random weights):")
    for line in format_summaries(summarize_store(result.store)):
        click.echo("  " + line)
    _echo_next_steps(result.workdir)


def next_steps(workdir: Path, catalog: Path | None = None) -> list[str]:
    """The commands a user runs after the demo; the demo's CLIP model is its own folder, and
    the world demo's artists are in the world catalog (``catalog``), not in styles.csv."""
    clip = shlex.quote(str(Path(workdir) / "models" / "clip"))
    where = shlex.quote(str(workdir))
    text = "a painting in the style of Nadia Vell" if catalog else "a portrait in the style of an impressionist"
    also = f" --catalog {shlex.quote(str(catalog))}" if catalog else ""
    return [
        f"atelier dashboard --workdir {where}",
        f"atelier search --workdir {where} --model {clip} --text '{text}'",
        f"atelier sql --workdir {where} \"SELECT finetune, verdict, count(*) AS n FROM comparisons "
        f"GROUP BY ALL ORDER BY ALL\"",
        f"atelier score --workdir {where} --model {clip}{also}",
    ]
