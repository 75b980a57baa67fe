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
@workdir_option(help="The workdir (images, thumbs, manifests, runs; DIR/atelier.duckdb).", create=True)
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns file,artist[,checkpoint][,prompt][,seed][,template][,negative_prompt] "
                   "(default: SRC/labels.csv when present); a file's own parameters win. A row with template "
                   "null and an empty artist is a no-artist baseline image.")
@click.option("--checkpoint", default=None, help="Checkpoint name for every image (overrides labels and PNG metadata).")
@click.option("--reference", "as_reference", is_flag=True, help="These are real artworks (reference images), not generations.")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="styles.csv to map artist names to ids (default: the project's catalog).")
@click.option("--seed-from-filename", "seed_regex", default=None, metavar="REGEX",
              help=r"Read each image's seed from its file name: a regex with one capture group, e.g. '-s(\d+)\.png$' "
                   "(metadata and a labels seed win).")
@click.option("--follow-links", is_flag=True,
              help="Also import files that symbolic links in SRC point to outside SRC (skipped and listed otherwise).")
@quiet_option()
def import_cmd(src: Path, workdir: Path, labels_csv: Path | None, checkpoint: str | None, as_reference: bool,
               catalog_path: Path | None, seed_regex: str | None, *, follow_links: bool, quiet: bool) -> None:
    """Import images made elsewhere (A1111/ComfyUI PNGs, labelled folders, references).

    Undecodable files are reported and recorded with their error; the store is updated
    in one transaction; a rerun adds nothing twice, and finishes an import that was killed
    or timed out on the store. Images without a seed cannot be compared over seeds:
    `atelier score` then bootstraps over images, or says undecided. Files over 512 MiB
    are recorded as errors without being read.
    """
    from evaluator.ingest.importer import import_images

    if labels_csv is None and (src / "labels.csv").is_file():
        labels_csv = src / "labels.csv"
    summary = import_images(src, workdir, labels_csv=labels_csv, checkpoint=checkpoint, as_reference=as_reference,
                            catalog_path=catalog_path, progress=not quiet, seed_from_filename=seed_regex,
                            follow_links=follow_links, echo=click.echo)
    for line in summary.report_lines():
        click.echo(line)
