"""`atelier index build | info | search`: the FAISS index of a model's image embeddings.

Reads the workdir's embedding parts; writes the index file and its run record (`build`);
`info` reads the index's meta JSON only.
`atelier index search` is the same command as `atelier search` (evaluator.cli.query).
"""

from __future__ import annotations

from dataclasses import asdict
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
@click.option("--index-memory", default=None, metavar="SIZE",
              help="Memory budget (512MB, 2GB): choose the fastest of IVF-HNSW Flat, IVF-SQ8 or IVF-PQ re-ranked, HNSW that reaches the target within it, measured.")
@click.option("--rebuild", is_flag=True, help="Start from scratch instead of adding new vectors.")
def index_build(workdir: Path, model: str, pretrained: str | None, rebuild: bool, index_memory: str | None, **tuning: float) -> None:
    """Add every embedded image missing from the index (exact, or IVF past the threshold)."""
    from evaluator.embedding.embed import load_embeddings, model_key
    from evaluator.embedding.index import IndexConfig, record_index_run, update_index
    from evaluator.embedding.index_budget import parse_size
    from evaluator.workspace.workdir import Workdir, workdir_lock

    budget = parse_size(index_memory) if index_memory is not None else None  # before any work
    wd = Workdir.at(workdir, create=False)
    key = model_key(model, pretrained)
    config = IndexConfig(**tuning)
    with workdir_lock(wd, echo=click.echo):  # not while a score run updates the same index
        embeddings = load_embeddings(wd, key)
        if not len(embeddings[0]):
            raise StateError(f"no embeddings of model {key!r} in {wd.root}: an index of nothing would be empty. "
                 f"Run `atelier embed -w {wd.root} --model {model}` (or `atelier score`) first.")
        info = update_index(wd, key, config, rebuild=rebuild, embeddings=embeddings, memory_budget=budget)
        if info.added or info.rebuilt:
            record_index_run(wd, info, config)
    for line in describe(asdict(info)):
        click.echo(f"{key}: {line}")
    click.echo(f"-> {wd.index(key)}")


def describe(meta: dict) -> list[str]:
    """The lines `index build` and `index info` print: kind, size, recall, why, warnings."""
    from evaluator.embedding.index_assign import MATMUL, min_batch
    from evaluator.embedding.index_budget import human_size

    kind = meta.get("kind", "?")
    param = f"efSearch {meta.get('ef_search')}" if kind == "hnsw" else f"nprobe {meta.get('nprobe')}"
    if meta.get("refine_factor"):
        param += f", {meta['refine_factor']} candidates re-ranked a neighbour"
    recall = "exact" if kind == "flat" else f"{param}, recall@10 {meta.get('recall_at_10', 0):.3f} on {meta.get('recall_queries')} held-out queries"
    size = f", ~{human_size(meta['bytes'])} in memory" if meta.get("bytes") else ""
    lines = [f"{meta.get('layout') or kind} ({kind}), {meta.get('ntotal')} vectors (+{meta.get('added', 0)}), dim {meta.get('dim')}, {recall}{size}"]
    if meta.get("exact_batch_from"):
        lines.append(f"batches of {meta['exact_batch_from']}+ queries are searched exactly (measured faster)")
    if meta.get("batch_assign") == MATMUL:
        lines.append(f"batches of {min_batch(meta.get('dim') or 1)}+ queries find their lists by one matmul against the centroids (measured faster)")
    for label in ("reason", "rebuilt"):
        if meta.get(label):
            lines.append(f"{label}: {meta[label]}")
    if meta.get("warning"):
        lines.append(f"WARNING: {meta['warning']}")
    return lines


@index_group.command("info")
@workdir_option()
@model_option()
@pretrained_option()
def index_info(workdir: Path, model: str, pretrained: str | None) -> None:
    """What the index of a model is: kind, size, measured recall and any warning."""
    from evaluator.embedding.embed import model_key
    from evaluator.embedding.index import index_status
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir, create=False)
    key = model_key(model, pretrained)
    status = index_status(wd, key)
    if not status["built"]:
        raise StateError(f"{status['warning']} -w {wd.root} --model {model}")
    for line in describe(status):
        click.echo(f"{key}: {line}")


# The same command is `atelier search` and `atelier index search`.
index_group.add_command(search_cmd)
