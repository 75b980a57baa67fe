"""`atelier demo`: the whole pipeline on tiny random-weight models (evaluator.demo.world).

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
@click.option("--artists", "n_artists", type=click.IntRange(2, 2000), default=24, show_default=True,
              help="How many artists to sample, stratified over movements.")
@click.option("--seeds", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Seeds per (artist, template, checkpoint); the bootstrap needs at least 2.")
def demo_command(workdir: Path, n_artists: int, seeds: int) -> None:
    """Run plan -> generate -> embed -> index -> score on tiny random-weight models.

    Builds a tiny base checkpoint, a LoRA fine-tune and a weight-perturbed fine-tune,
    and a tiny CLIP model, all locally (no download). Random weights make the scores
    meaningless: this shows the machinery and fills a store the dashboard can open.
    Running it again makes no new image and adds no row.
    """
    from evaluator.demo.world import DemoConfig, run_demo

    click.echo("atelier demo: tiny RANDOM-WEIGHT models, so every score below is meaningless;")
    click.echo("it exercises the pipeline and fills a store to browse.\n")
    result = run_demo(workdir, DemoConfig(n_artists=n_artists, seeds=tuple(range(seeds))), echo=click.echo)
    from evaluator.demo.summary import format_summaries, summarize_store

    click.echo(
        f"\nunits {result.n_units}: generated {result.generated}, already there {result.skipped}, "
        f"failed {result.failed}"
    )
    click.echo("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items()))
    click.echo(f"store: {result.store}\n")
    click.echo("what each fine-tune kept, gained and lost (meaningless here: random weights):")
    for line in format_summaries(summarize_store(result.store)):
        click.echo("  " + line)
    click.echo("\nnext steps (each runs as printed):")
    for line in next_steps(result.workdir):
        click.echo("  " + line)
    click.echo("\n" + REAL_MODELS_HINT)


def next_steps(workdir: Path) -> list[str]:
    """The commands a user runs after the demo; the demo's CLIP model is its own folder."""
    clip = shlex.quote(str(Path(workdir) / "models" / "clip"))
    where = shlex.quote(str(workdir))
    return [
        f"atelier dashboard --workdir {where}",
        f"atelier search --workdir {where} --model {clip} --text 'a portrait in the style of an impressionist'",
        f"atelier sql --workdir {where} \"SELECT finetune, verdict, count(*) AS n FROM comparisons "
        f"GROUP BY ALL ORDER BY ALL\"",
        f"atelier score --workdir {where} --model {clip}",
    ]
