"""`atelier curate`: flag an image set by resolution, duplicates, watermarks, aesthetic, outliers.

Reads a folder (or the workdir's images with --from-store) and the models given; writes the
``curation`` / ``curation_files`` rows and a ``runs`` row of DIR/atelier.duckdb, and with
--export the kept images (evaluator.curation.runner, evaluator.curation.export).
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import (
    device_option,
    fail,
    model_option,
    pretrained_option,
    quiet_option,
    workdir_option,
)

DEFAULTS = {"min_side": 256, "max_aspect": 3.0, "phash_distance": 10, "near_cosine": 0.94,
            "sd_mark_agreement": 0.80, "max_watermark": 0.5, "min_aesthetic": 5.0, "outlier_z": 3.5}


def _threshold_options(function):
    """One option per field of evaluator.curation.config.Thresholds (defaults checked equal in tests)."""
    specs = [
        ("--min-side", "min_side", int, "low_resolution below this shorter side (px); LAION's SD sets: 512."),
        ("--max-aspect", "max_aspect", float, "extreme_aspect above this long/short ratio."),
        ("--phash-distance", "phash_distance", int, "near_duplicate within this many of 64 perceptual-hash bits."),
        ("--near-cosine", "near_cosine", float, "near_duplicate at or above this embedding cosine (clip-retrieval)."),
        ("--sd-mark-agreement", "sd_mark_agreement", float, "watermark_sd at or above this bit agreement."),
        ("--max-watermark", "max_watermark", float, "watermark at or above this p(watermark) (LAION: 0.5)."),
        ("--min-aesthetic", "min_aesthetic", float, "aesthetic_low below this score (LAION-Aesthetics 5+)."),
        ("--outlier-z", "outlier_z", float, "outlier below minus this robust z (Iglewicz-Hoaglin 3.5)."),
    ]
    for flag, name, kind, text in reversed(specs):
        function = click.option(flag, name, type=kind, default=DEFAULTS[name], show_default=True, help=text)(function)
    return function


@click.command("curate")
@click.argument("src", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@workdir_option(help="The workdir (DIR/atelier.duckdb gets the curation tables).", create=True)
@click.option("--from-store", is_flag=True, help="Curate the workdir's own images instead of a folder.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The import's labels CSV (file,artist[,prompt]...; default: SRC/labels.csv when present).")
@model_option(required=False, help="CLIP for embeddings (near-duplicate cosine, outliers, aesthetic).")
@pretrained_option()
@click.option("--aesthetic-head", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A LAION aesthetic head file (v1 sa_0_4_vit_*_linear.pth or v2 sac+logos+ava1-l14-linearMSE.pth); "
                   "default: one in $ATELIER_CACHE/aesthetic/ matching --model.")
@click.option("--watermark-model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="LAION's visible-watermark detector weights (watermark_model_v1.pt).")
@_threshold_options
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Processes decoding and measuring images (0: in this process).")
@device_option()
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the kept images (no flag) to this new folder.")
@click.option("--layout", type=click.Choice(["kohya", "flat"]), default="kohya", show_default=True,
              help="kohya: N_concept/ folders with .txt captions; flat: the images and a labels.csv.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="kohya's N: repeats per epoch in the folder name.")
@click.option("--concept", default=None, help="kohya concept folder name for every image (default: each artist id).")
@quiet_option()
def curate_cmd(src: Path | None, workdir: Path, **given) -> None:
    """Flag an image set by resolution, duplicates, watermarks, aesthetic score and outliers.

    Nothing is deleted: every image gets reason codes in the curation tables, and a rerun
    skips what is done (keyed by content hash). --export copies the kept images out.
    """
    from evaluator.curation.config import Thresholds
    from evaluator.curation.export import ExportOptions, export_kept
    from evaluator.curation.models import ModelOptions
    from evaluator.curation.runner import CurateOptions, curate

    if (src is None) == (not given["from_store"]):
        fail(click.UsageError("give a SRC folder or --from-store (one of them)"))
    labels_csv = given["labels_csv"]
    if src is not None and labels_csv is None and (src / "labels.csv").is_file():
        labels_csv = src / "labels.csv"
    options = CurateOptions(
        thresholds=Thresholds(**{name: given[name] for name in DEFAULTS}),
        models=ModelOptions(given["model"], given["pretrained"], given["aesthetic_head"], given["watermark_model"],
                            given["device"]),
        workers=given["workers"], progress=not given["quiet"],
    )
    export = None
    if given["export_dir"] is not None:
        export = ExportOptions(given["export_dir"], given["layout"], given["repeats"], given["concept"])
    if export is not None:
        export.validate(src, workdir)
    summary = curate(src, workdir, labels_csv=labels_csv, options=options)
    for line in summary.report_lines():
        click.echo(line)
    if export is not None:
        click.echo(export_kept(workdir, summary.source, export).report_line())
