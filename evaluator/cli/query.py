"""`atelier search` and `atelier sql`: read what the pipeline stored.

``search`` reads a model's FAISS index (and embeds the query text or image with the
model), then the matching rows of DIR/atelier.duckdb; ``--format json`` is what the
dashboard's Similarity page runs, so the Streamlit process never loads torch.
``sql`` runs one query through ``workspace.queries.run_user_sql`` (one read-only statement,
no file beyond the store, memory, time, row and byte limits) and prints it without
terminal control characters. Both write nothing. Only click is imported at module level.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from evaluator.cli.options import device_option, model_option, pretrained_option, workdir_option
from evaluator.errors import InputError, StateError


@dataclass(frozen=True)
class SearchRequest:
    """One search: the query (exactly one of text, image, image_id) and where to look."""

    workdir: Path
    model: str
    pretrained: str | None
    text: str | None
    image: str | None
    image_id: int | None
    k: int
    artists: bool
    checkpoint: str | None
    device: str


@dataclass
class SearchResult:
    """Hits of a search: images (with their store rows) or, with --artists, artists."""

    model: str
    index: dict[str, Any]
    images: list[dict[str, Any]]
    artists: list[dict[str, Any]]
    checkpoint: str | None = None

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "index": self.index, "checkpoint": self.checkpoint,
                           "images": self.images, "artists": self.artists}, default=str)


def _indexed_vector(wd, key: str, image_id: int):
    """The stored vector of an image of the index, as a 1-row query."""
    import numpy as np

    from evaluator.embedding.index import load_index

    index, _ = load_index(wd, key)
    try:
        return np.asarray(index.reconstruct(int(image_id)))[None]
    except RuntimeError:
        raise InputError(f"image id {image_id} is not in the index of {key}") from None


def _query_vector(wd, request: SearchRequest):
    """(model key, query vector): the index's own vector of an image, or the model's embedding."""
    from evaluator.embedding.embed import (
        embed_image_files,
        embed_texts,
        load_clip,
        model_key,
        text_cache_dir,
    )

    if request.image_id is not None and not request.artists:
        key = model_key(request.model, request.pretrained)
        return key, _indexed_vector(wd, key, request.image_id)
    clip = load_clip(request.model, request.pretrained, request.device)
    if request.text is not None:
        return clip.key, embed_texts(clip, [request.text], cache_dir=text_cache_dir(wd, clip.key))
    if request.image is not None:
        return clip.key, embed_image_files(clip, [request.image])
    return clip.key, _indexed_vector(wd, clip.key, request.image_id)


def _image_rows(wd, image_ids: list[int]) -> dict[int, tuple]:
    """(checkpoint, artist_id, template, seed, path) of each image id, from the store or,
    for images embedded but not yet scored, from the manifests that made them."""
    rows = _store_rows(wd.store, image_ids)
    missing = [i for i in image_ids if i not in rows]
    if missing and wd.manifests.is_dir():
        from evaluator.workspace.manifest import read_manifests

        frame = read_manifests(wd.manifests)
        frame = frame[frame["image_id"].isin(missing)].drop_duplicates("image_id", keep="last")
        for record in frame.itertuples(index=False):
            rows[int(record.image_id)] = (record.checkpoint, record.artist_id, record.template,
                                          record.seed, record.path)
    return rows


def _store_rows(store: Path, image_ids: list[int]) -> dict[int, tuple]:
    from evaluator.workspace.store import connect_read_only

    if not store.is_file() or not image_ids:
        return {}
    con = connect_read_only(store)
    try:
        placeholders = ",".join("?" * len(image_ids))
        rows = con.execute(
            f"SELECT image_id, checkpoint, artist_id, template, seed, path FROM images WHERE image_id IN ({placeholders})",
            image_ids,
        ).fetchall()
    finally:
        con.close()
    return {row[0]: row[1:] for row in rows}


def _nearest_artists(wd, key: str, query, request: SearchRequest) -> list[dict[str, Any]]:
    """Nearest artist centroids of one checkpoint's images to the query."""
    from evaluator.embedding.embed import load_embeddings
    from evaluator.embedding.index import build_centroid_index
    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(wd.store)
    try:
        rows = con.execute(
            "SELECT image_id, artist_id FROM images WHERE checkpoint = ? AND error IS NULL AND artist_id <> '_baseline'",
            [request.checkpoint],
        ).df()
    finally:
        con.close()
    if rows.empty:
        raise InputError(f"checkpoint {request.checkpoint!r} has no images in {wd.store}")
    ids, vecs = load_embeddings(wd, key, ids=rows["image_id"].tolist())
    artist_of = dict(zip(rows["image_id"], rows["artist_id"], strict=True))
    centroids = build_centroid_index(request.checkpoint, [artist_of[int(i)] for i in ids], vecs)
    return [{"rank": rank, "artist_id": artist, "similarity": float(sim)}
            for rank, (artist, sim) in enumerate(centroids.search(query, request.k)[0], start=1)]


def run_search(request: SearchRequest) -> SearchResult:
    """Search the workdir's index (or the artist centroids of a checkpoint) for the query."""
    from evaluator.embedding.index import load_index, recall_warning, search_by_vector
    from evaluator.workspace.workdir import Workdir

    if sum(x is not None for x in (request.text, request.image, request.image_id)) != 1:
        raise click.UsageError("give exactly one of --text, --image, --image-id")
    if request.artists and request.checkpoint is None:
        raise click.UsageError("--artists needs --checkpoint (artist centroids are per checkpoint)")
    wd = Workdir.at(request.workdir, create=False)
    key, query = _query_vector(wd, request)
    if request.artists:
        artists = _nearest_artists(wd, key, query, request)
        return SearchResult(key, {}, [], artists, checkpoint=request.checkpoint)
    index, meta = load_index(wd, key)
    sims, ids = search_by_vector(index, query, request.k, meta)
    found = [int(i) for i in ids[0] if i >= 0]
    info = _image_rows(wd, found)
    unknown = sorted(set(found) - set(info))
    if unknown:  # an index entry nothing describes: the workdir's files disagree
        raise StateError(f"{len(unknown)} of the {len(found)} hits (e.g. image {unknown[0]}) are in the index "
                         f"{wd.index(key)} but in neither the store nor the manifests of {wd.root}: "
                         f"rebuild it with `atelier index build -w {wd.root} --model ... --rebuild`")
    images = []
    for rank, (sim, image_id) in enumerate(zip(sims[0], ids[0], strict=True), start=1):
        if image_id < 0:
            continue
        checkpoint, artist, template, seed, path = info[int(image_id)]
        images.append({"rank": rank, "similarity": float(sim), "image_id": int(image_id), "checkpoint": checkpoint,
                       "artist_id": artist, "template": template, "seed": seed, "path": path})
    return SearchResult(key, {"kind": meta.get("kind", "?"), "ntotal": meta.get("ntotal", "?"),
                              "recall_at_10": meta.get("recall_at_10"), "warning": recall_warning(meta)}, images, [])


def echo_search_table(result: SearchResult) -> None:
    """The human-readable listing of `atelier search`."""
    if result.checkpoint is not None:
        click.echo(f"nearest artists of checkpoint {result.checkpoint} ({result.model}):")
        for hit in result.artists:
            click.echo(f"{hit['rank']:>4}  {hit['similarity']:6.3f}  {hit['artist_id']}")
        return
    click.echo(f"{result.model} ({result.index['kind']} index, {result.index['ntotal']} images)")
    if result.index.get("warning"):
        click.echo(f"WARNING: {result.index['warning']}", err=True)
    click.echo(f"{'rank':>4}  {'cos':>6}  {'image_id':>20}  checkpoint / artist / template / seed  path")
    for hit in result.images:
        click.echo(f"{hit['rank']:>4}  {hit['similarity']:6.3f}  {hit['image_id']:>20}  {hit['checkpoint']} / "
                   f"{hit['artist_id']} / {hit['template']} / {hit['seed']}  {hit['path']}")


@click.command("search")
@workdir_option()
@model_option()
@pretrained_option()
@click.option("--text", "-t", default=None, help="Query text, embedded by the model.")
@click.option("--image", "-i", default=None, type=click.Path(dir_okay=False, exists=True), help="Query image file.")
@click.option("--image-id", default=None, type=int, help="An image already in the index.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Results to show.")
@click.option("--artists", is_flag=True, help="Return nearest artists (centroids of --checkpoint) instead of images.")
@click.option("--checkpoint", default=None, help="With --artists: whose artist centroids.")
@device_option()
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json"]),
              help="json: one object with the model, the index and the hits (what the dashboard reads).")
def search_cmd(fmt: str, **request: Any) -> None:
    """Nearest images (or artists) to a text, an image file, or an indexed image."""
    result = run_search(SearchRequest(**request))
    if fmt == "json":
        click.echo(result.to_json())
    else:
        echo_search_table(result)


# Terminal control sequences a stored cell must not send to the terminal: OSC (title,
# hyperlinks, clipboard), CSI (colours, cursor moves), other ESC pairs, and every C0/C1
# control character except tab and newline.
_CONTROL = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]?"
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(value: Any) -> Any:
    """``value`` without terminal escape sequences or control characters (tab and newline stay)."""
    return _CONTROL.sub("", value) if isinstance(value, str) else value


def _printable(frame):
    """A copy of ``frame`` whose text cells and column names carry no control characters."""
    from pandas.api.types import is_object_dtype, is_string_dtype

    frame = frame.rename(columns=lambda c: strip_controls(str(c)))
    for column in frame.columns:
        if is_object_dtype(frame[column]) or is_string_dtype(frame[column]):
            frame[column] = frame[column].map(strip_controls)
    return frame


def _write_csv(frame) -> None:
    """CSV on stdout; a cell a spreadsheet would run as a formula gets a leading apostrophe."""
    from evaluator.workspace.queries import neutralize_formulas

    neutralize_formulas(_printable(frame)).to_csv(sys.stdout, index=False)


@dataclass(frozen=True)
class _StoreFile:
    """What ``run_user_sql`` needs of a store: its file and how long to wait for a writer."""

    path: Path
    lock_timeout: float = 30.0


@click.command("sql")
@workdir_option()
@click.argument("query")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "csv", "json"]))
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows fetched at most, in every format (the query stops there; the rest is never read).")
@click.option("--time-limit", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds the query may run before it is interrupted.")
def sql_cmd(workdir: Path, query: str, fmt: str, limit: int, time_limit: float) -> None:
    """Run a read-only SQL query on DIR/atelier.duckdb (waits briefly while a writer holds it).

    One statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN), the same guard and
    limits as the dashboard's SQL page: no file beyond the store, DuckDB memory and
    threads capped, at most 64 MB of results. Control characters in cells are not printed.
    """
    import duckdb

    from evaluator.workspace.queries import UnsafeQueryError, run_user_sql
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir, create=False)
    try:
        result = run_user_sql(_StoreFile(wd.store), query, row_limit=limit, time_limit=time_limit)
    except UnsafeQueryError as exc:
        raise click.ClickException(f"refused: `atelier sql` reads only the store {wd.store} (one read-only "
                                   f"statement, no other file, settings locked): {exc}") from exc
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc
    except duckdb.Error as exc:
        raise click.ClickException(f"SQL error: {exc}") from exc
    frame = result.frame
    if fmt == "csv":
        _write_csv(frame)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso"))
    else:
        shown = _printable(frame)
        click.echo(shown.to_string(index=False) if len(shown) else "(no rows)")
    if result.truncated:
        more = "use --limit" if result.truncated_by == "rows" else "select fewer or smaller columns"
        click.echo(f"... {result.note} ({more})", err=fmt != "table")
