"""`atelier index build | search`: the FAISS index of a model's image embeddings.

Reads the workdir's embedding parts; writes the index file and its run record.
`atelier index search` is the same command as `atelier search` (evaluator.cli.query).
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import model_option, pretrained_option, workdir_option
from evaluator.cli.query import search_cmd
from evaluator.errors import StateError


@click.group("index")
def index_group() -> None:
    """The FAISS index of image embeddings: build/update it, search it."""


@index_group.command("build")
@workdir_option()
@model_option()
@pretrained_option()
@click.option("--ivf-threshold", default=200_000, show_default=True, type=click.IntRange(min=1), help="Switch from exact to IVF at this many vectors.")
@click.option("--nprobe", default=1, show_default=True, type=click.IntRange(min=1), help="IVF lists probed per query: where tuning starts.")
@click.option("--target-recall", default=0.95, show_default=True, type=click.FloatRange(0, 1), help="Raise nprobe until leave-one-out recall@10 vs exact reaches this (+0.01 margin).")
@click.option("--rebuild", is_flag=True, help="Start from scratch instead of adding new vectors.")
def index_build(workdir: Path, model: str, pretrained: str | None, rebuild: bool, **tuning: float) -> None:
    """Add every embedded image missing from the index (exact, or IVF past the threshold)."""
    from evaluator.embedding.embed import load_embeddings, model_key
    from evaluator.embedding.index import IndexConfig, record_index_run, update_index
    from evaluator.workspace.workdir import Workdir, workdir_lock

    wd = Workdir.at(workdir, create=False)
    key = model_key(model, pretrained)
    config = IndexConfig(**tuning)
    with workdir_lock(wd, echo=click.echo):  # not while a score run updates the same index
        embeddings = load_embeddings(wd, key)
        if not len(embeddings[0]):
            raise StateError(f"no embeddings of model {key!r} in {wd.root}: an index of nothing would be empty. "
                 f"Run `atelier embed -w {wd.root} --model {model}` (or `atelier score`) first.")
        info = update_index(wd, key, config, rebuild=rebuild, embeddings=embeddings)
        if info.added:
            record_index_run(wd, info, config)
    recall = "exact" if info.kind == "flat" else f"nprobe {info.nprobe}, recall@10 {info.recall_at_10:.3f} on {info.recall_queries} queries"
    click.echo(f"{key}: {info.kind} index, {info.ntotal} vectors (+{info.added}), dim {info.dim}, {recall} -> {wd.index(key)}")


# The same command is `atelier search` and `atelier index search`.
index_group.add_command(search_cmd)
