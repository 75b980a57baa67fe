"""`atelier references add`: real works of artists, for the reference metrics.

Reads a folder of images (one artist's, per-artist folders, or a labels CSV) and the
catalog, to resolve each artist by id or name; writes reference images, thumbnails and
their manifest shard into the workdir, and prototypes when a model is given
(evaluator.ingest.references).
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import model_option, pretrained_option, quiet_option, workdir_option


@click.group("references")
def references_group() -> None:
    """Reference works of an artist (real paintings) for reference_similarity, mAP@k, fd_clip."""


@references_group.command("add")
@click.argument("args", nargs=-1, required=True, metavar="[ARTIST] FOLDER")
@workdir_option(create=True)
@click.option("--labels", "labels_csv", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="CSV with file,artist columns (paths relative to FOLDER), as for `atelier import`.")
@model_option(required=False, help="Also embed them now and store the prototype (else `atelier score` does).")
@pretrained_option()
@click.option("--catalog", "catalog_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Catalog the artists are resolved in (default: atelier's).")
@quiet_option()
def references_add(args: tuple[str, ...], workdir: Path, labels_csv: Path | None, model: str | None,
                   pretrained: str | None, catalog_path: Path | None, quiet: bool) -> None:
    """Import reference works: FOLDER of ARTIST, FOLDER/<artist>/..., or --labels.

    \b
    ARTIST is a catalog id or name ("Claude Monet" or claude-monet). Without it, each
    folder under FOLDER names its artist the same way, or --labels names each file's.
    An artist the catalog does not know refuses the whole call, with close names.
    """
    from evaluator.embedding.embed import load_clip
    from evaluator.ingest.references import add_references
    from evaluator.workspace.workdir import Workdir

    if len(args) > 2:
        raise click.UsageError(f"expected [ARTIST] FOLDER but got {len(args)} arguments")
    artist, folder = (args[0], Path(args[1])) if len(args) == 2 else (None, Path(args[0]))
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", param_hint="FOLDER")
    wd = Workdir.at(workdir)
    clip = load_clip(model, pretrained) if model else None
    results = add_references(wd, folder, artist=artist, labels_csv=labels_csv, clip=clip,
                             catalog_path=catalog_path, progress=not quiet)
    for result in results:
        click.echo(f"{result.artist_id}: {len(result.added)} reference images ({len(result.errors)} unreadable)")
        for path, error in result.errors.items():
            click.echo(f"  {path}: {error}", err=True)
    imported = sum(r.imported for r in results)
    shard = results[0].shard if results else None
    click.echo(f"{len(results)} artist(s), {imported} new images" + (f" -> {shard}" if shard else ""))
    models = sorted({m for r in results for m in r.prototype_models})
    if models:
        click.echo(f"  prototypes stored for {', '.join(models)}")
