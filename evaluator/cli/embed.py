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
              batch_size: int, num_workers: int) -> None:
    """Embed every image of the manifests not yet embedded by MODEL (resumable)."""
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import Workdir, workdir_lock

    wd = Workdir.at(workdir, create=False)
    clip = load_clip(model, pretrained, device, dtype)
    frame = read_manifests(wd.manifests)
    frame = frame[frame["error"].isna() & frame["path"].notna()]
    with workdir_lock(wd, echo=click.echo):
        result = embed_images(wd, clip, frame[["image_id", "path"]], batch_size, num_workers)
    click.echo(f"{clip.key}: embedded {result.n_done}, skipped {result.n_skipped} (already done), "
               f"unreadable {result.n_failed} in {result.seconds:.1f}s")
    for image_id, error in sorted(result.errors.items())[:20]:
        click.echo(f"  image {image_id}: {error}", err=True)
    if result.n_failed > 20:
        click.echo(f"  ... and {result.n_failed - 20} more (all recorded by `atelier score` in embedding_errors)", err=True)
