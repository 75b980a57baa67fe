"""`atelier references add`: real works of an artist, for the reference metrics.

Reads a folder of images (and the catalog, to check the artist); writes reference images,
thumbnails and their manifest shard into the workdir, and a prototype when a model is given.
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import model_option, pretrained_option, workdir_option


@click.group("references")
def references_group() -> None:
    """Reference works of an artist (real paintings) for reference_similarity, mAP@k, fd_clip."""


@references_group.command("add")
@click.argument("artist")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@workdir_option(create=True)
@model_option(required=False, help="Also embed them now and store the prototype (else `atelier score` does).")
@pretrained_option()
@click.option("--catalog", "catalog_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Catalog to check ARTIST against.")
def references_add(artist: str, folder: Path, workdir: Path, model: str | None, pretrained: str | None,
                   catalog_path: Path | None) -> None:
    """Import the images of FOLDER as reference works of ARTIST (an artist_id)."""
    from evaluator.embedding.embed import load_clip
    from evaluator.ingest.references import add_references
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir)
    clip = load_clip(model, pretrained) if model else None
    result = add_references(wd, artist, folder, clip=clip, catalog_path=catalog_path)
    click.echo(f"{artist}: {len(result.added)} reference images ({result.imported} new, {len(result.errors)} unreadable)"
               + (f" -> {result.shard}" if result.shard else ""))
    for path, error in result.errors.items():
        click.echo(f"  {path}: {error}", err=True)
    if result.prototype_models:
        click.echo(f"  prototype stored for {', '.join(result.prototype_models)}")
