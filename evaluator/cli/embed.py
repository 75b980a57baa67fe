"""`atelier embed`: embed the manifests' images with a CLIP model (resumable).

Reads the workdir's manifests and images; writes embedding parts under the workdir.
Only click is imported at module level; torch and open_clip load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import clip_options, workdir_option


@click.command("embed")
@workdir_option()
@clip_options
def embed_cmd(workdir: Path, model: str, pretrained: str | None, device: str, dtype: str,
              batch_size: int, num_workers: int | None) -> None:
    """Embed every image of the manifests not yet embedded by MODEL (resumable).

    \b
    Under `torchrun --nproc_per_node N` (or `accelerate launch`) each process embeds the
    images whose id % N is its rank and writes its own part files; a rerun, with any N,
    embeds only what is missing.
    """
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.generation.distributed import device_for, dist_env
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import Workdir, workdir_lock

    env = dist_env()
    wd = Workdir.at(workdir, create=False)
    clip = load_clip(model, pretrained, device_for(device, env), dtype)
    frame = read_manifests(wd.manifests)
    frame = frame[frame["error"].isna() & frame["path"].notna()]
    with workdir_lock(wd, echo=click.echo, shared=env.world_size > 1):
        result = embed_images(wd, clip, frame[["image_id", "path"]], batch_size, num_workers, env=env)
    where = f"rank {env.rank}/{env.world_size}: " if env.world_size > 1 else ""
    elsewhere = f", {result.n_elsewhere} left to the other ranks" if env.world_size > 1 else ""
    click.echo(f"{where}{clip.key}: embedded {result.n_done}, skipped {result.n_skipped} (already done)"
               f"{elsewhere}, unreadable {result.n_failed} in {result.seconds:.1f}s")
    for image_id, error in sorted(result.errors.items())[:20]:
        click.echo(f"  image {image_id}: {error}", err=True)
    if result.n_failed > 20:
        click.echo(f"  ... and {result.n_failed - 20} more (all recorded by `atelier score` in embedding_errors)", err=True)
