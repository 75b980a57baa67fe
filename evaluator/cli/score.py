"""`atelier score` and `atelier metrics list`.

``score`` reads the workdir's manifests, images, embeddings and the catalog, and writes
every score table of DIR/atelier.duckdb in one transaction (evaluator.scoring.run).
Only click is imported at module level; torch, open_clip, faiss and duckdb load inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from evaluator.cli.options import (
    batch_size_option,
    device_option,
    dtype_option,
    model_option,
    num_workers_option,
    pretrained_option,
    quiet_option,
    workdir_option,
)


def parse_pair(text: str) -> tuple[str, str]:
    """``BASE:FINETUNE`` of ``--compare`` as a (base, finetune) pair."""
    if text.count(":") != 1 or not all(text.split(":")):
        raise click.BadParameter(f"--compare takes BASE:FINETUNE but got {text!r}")
    base, finetune = text.split(":")
    return base, finetune


def parse_min_effects(texts: tuple[str, ...]) -> dict[str, float]:
    """``METRIC=VALUE`` of ``--min-effect`` (``all=VALUE`` for every metric): the overrides
    only; ScoreConfig puts them over the registry's defaults and refuses unknown names."""
    overrides: dict[str, float] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise click.BadParameter(f"takes METRIC=VALUE (e.g. reference_similarity=0.01) but got {text!r}",
                                     param_hint="--min-effect")
    return overrides


@click.command("score")
@workdir_option()
@model_option()
@pretrained_option()
@click.option("--catalog", "catalog_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="styles.csv to identify against (default: atelier's).")
@click.option("--templates-file", "templates_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Extra prompt templates (TOML).")
@click.option("--compare", "compare", multiple=True, metavar="BASE:FINETUNE", help="Compare a fine-tune with its base (repeatable); checkpoint records' `base` are compared anyway.")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=1), help="Bootstrap resamples over seeds.")
@click.option("--min-effect", "min_effects", multiple=True, metavar="METRIC=VALUE", help="The smallest change of a metric that counts as gained/lost; smaller real changes are kept (repeatable; all=0 for none; defaults: `atelier metrics list`).")
@click.option("--k-neighbors", default=10, show_default=True, type=click.IntRange(min=1), help="Nearest artists stored per artist.")
@click.option("--retrieval-k", "retrieval_ks", multiple=True, default=(1, 5, 10), show_default=True, type=click.IntRange(min=1), help="A k of retrieval_map@k (repeatable; each k is stored as its own metric).")
@click.option("--readout", default="cosine", show_default=True, type=click.Choice(["cosine", "csls"]), help="Identification readout: raw cosine, or CSLS (marks down 'hub' artists close to many images).")
@click.option("--csls-k", default=10, show_default=True, type=click.IntRange(min=1), help="CSLS: nearest scored images behind each artist's hubness term.")
@click.option("--ivf-threshold", default=200_000, show_default=True, type=click.IntRange(min=1), help="FAISS: exact search below, IVF from here.")
@device_option()
@dtype_option()
@batch_size_option()
@num_workers_option()
@quiet_option(help="No progress bars.")
def score_cmd(workdir: Path, compare: tuple[str, ...], ivf_threshold: int, min_effects: tuple[str, ...], quiet: bool,
              **settings: Any) -> None:
    """Ingest manifests, embed, index and score every image into DIR/atelier.duckdb.

    \b
    Writes images, image_scores, artist_scores (n, CI over seeds), checkpoint_scores,
    artist_neighbors and comparisons (fine-tune vs base: delta, CI, verdict) in one
    transaction. A rerun with nothing new writes nothing; a new checkpoint scores only
    its own images. Under `torchrun --nproc_per_node N` each process embeds and scores
    its share of the images (image_scores parts) and rank 0 writes the store.
    """
    import duckdb

    from evaluator.embedding.index import IndexConfig
    from evaluator.errors import InputError
    from evaluator.scoring.run import ScoreConfig, score

    settings["retrieval_ks"] = tuple(sorted(set(settings["retrieval_ks"])))
    try:
        config = ScoreConfig(base_pairs=[parse_pair(c) for c in compare] or None,
                             min_effect=parse_min_effects(min_effects),
                             index=IndexConfig(ivf_threshold=ivf_threshold), progress=not quiet, **settings)
    except InputError as exc:  # an unknown or invalid --min-effect
        raise click.BadParameter(exc.args[0] if exc.args else str(exc), param_hint="--min-effect") from None
    try:
        summary = score(workdir, config, echo=click.echo)
    except duckdb.Error as exc:  # e.g. the commit could not write the WAL: rolled back
        raise click.ClickException(
            f"writing the store {Path(workdir) / 'atelier.duckdb'} failed, nothing was written (it is as before): {exc}"
        ) from exc
    if not summary.noop and summary.rank == 0:  # ranks > 0 of a launch said what they did
        idx = summary.index
        click.echo(f"index: {idx.get('kind')} over {idx.get('ntotal')} images (recall@10 {idx.get('recall_at_10')})")


@click.group("metrics")
def metrics_group() -> None:
    """The metrics registry."""


@metrics_group.command("list")
def metrics_list() -> None:
    """Print every metric: name, level, direction, whether it needs references, definition."""
    from evaluator.scoring.metrics import metrics_table

    click.echo(metrics_table())
