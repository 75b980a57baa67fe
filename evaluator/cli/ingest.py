"""`atelier import`: images made elsewhere (A1111/ComfyUI PNGs, labelled folders, references).

Reads a folder of images (and its labels CSV, the catalog); writes the images, thumbnails,
a manifest shard and their rows of DIR/atelier.duckdb (evaluator.ingest.importer).
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import quiet_option, workdir_option


@click.command("import")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@workdir_option(help="The workdir (images, thumbs, manifests, runs; DIR/atelier.duckdb).")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns file,artist[,checkpoint][,prompt] (default: SRC/labels.csv when present).")
@click.option("--checkpoint", default=None, help="Checkpoint name for every image (overrides labels and PNG metadata).")
@click.option("--reference", "as_reference", is_flag=True, help="These are real artworks (reference images), not generations.")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="styles.csv to map artist names to ids (default: the project's catalog).")
@quiet_option()
def import_cmd(src: Path, workdir: Path, labels_csv: Path | None, checkpoint: str | None, as_reference: bool,
               catalog_path: Path | None, quiet: bool) -> None:
    """Import images made elsewhere (A1111/ComfyUI PNGs, labelled folders, references).

    Undecodable files are reported and recorded with their error; the store is updated
    in one transaction; a rerun adds nothing twice.
    """
    from evaluator.ingest.importer import import_images

    if labels_csv is None and (src / "labels.csv").is_file():
        labels_csv = src / "labels.csv"
    summary = import_images(src, workdir, labels_csv=labels_csv, checkpoint=checkpoint, as_reference=as_reference,
                            catalog_path=catalog_path, progress=not quiet)
    for line in summary.report_lines():
        click.echo(line)
