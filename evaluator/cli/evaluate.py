"""`atelier embed | index | score | metrics | references | search | sql`.

Only click is imported at module level (see evaluator/cli.py): torch, open_clip, faiss,
duckdb and pandas load inside the commands, so `atelier --help` answers instantly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

WORKDIR = click.option(
    "--workdir", "-w", required=True, type=click.Path(file_okay=False, path_type=Path), help="The workdir (DIR/atelier.duckdb)."
)
MODEL = click.option(
    "--model", "-m", envvar="ATELIER_CLIP_MODEL", required=True,
    help="open_clip model: architecture (ViT-B-32) with --pretrained, hf-hub:<id>, or a local folder. Env: ATELIER_CLIP_MODEL.",
)
PRETRAINED = click.option(
    "--pretrained", envvar="ATELIER_CLIP_PRETRAINED", default=None,
    help="Pretrained tag (needs network, e.g. laion2b_s34b_b79k) or a local weights file.",
)
DEVICE = click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, mps.")
DTYPE = click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
BATCH = click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
WORKERS = click.option("--num-workers", default=2, show_default=True, type=click.IntRange(min=0), help="DataLoader workers decoding images.")


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


def _parse_pair(text: str) -> tuple[str, str]:
    if text.count(":") != 1 or not all(text.split(":")):
        raise click.BadParameter(f"--compare takes BASE:FINETUNE but got {text!r}")
    base, ft = text.split(":")
    return base, ft


# ------------------------------------------------------------------ embed


@click.command("embed")
@WORKDIR
@MODEL
@PRETRAINED
@DEVICE
@DTYPE
@BATCH
@WORKERS
def embed_cmd(workdir, model, pretrained, device, dtype, batch_size, num_workers) -> None:
    """Embed every image of the manifests not yet embedded by MODEL (resumable)."""
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import Workdir, workdir_lock

    try:
        wd = Workdir.at(workdir, create=False)
        clip = load_clip(model, pretrained, device, dtype)
        frame = read_manifests(wd.manifests)
        frame = frame[frame["error"].isna() & frame["path"].notna()]
        with workdir_lock(wd, echo=click.echo):
            result = embed_images(wd, clip, frame[["image_id", "path"]], batch_size, num_workers)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    click.echo(f"{clip.key}: embedded {result.n_done}, skipped {result.n_skipped} (already done), "
               f"unreadable {result.n_failed} in {result.seconds:.1f}s")
    for image_id, error in sorted(result.errors.items())[:20]:
        click.echo(f"  image {image_id}: {error}", err=True)
    if result.n_failed > 20:
        click.echo(f"  ... and {result.n_failed - 20} more (all recorded by `atelier score` in embedding_errors)", err=True)


# ------------------------------------------------------------------ index


@click.group("index")
def index_group() -> None:
    """The FAISS index of image embeddings: build/update it, search it."""


@index_group.command("build")
@WORKDIR
@MODEL
@PRETRAINED
@click.option("--ivf-threshold", default=200_000, show_default=True, type=click.IntRange(min=1), help="Switch from exact to IVF at this many vectors.")
@click.option("--nprobe", default=32, show_default=True, type=click.IntRange(min=1), help="IVF lists probed per query (starting value).")
@click.option("--target-recall", default=0.95, show_default=True, type=click.FloatRange(0, 1), help="Raise nprobe until recall@10 vs exact reaches this.")
@click.option("--rebuild", is_flag=True, help="Start from scratch instead of adding new vectors.")
def index_build(workdir, model, pretrained, ivf_threshold, nprobe, target_recall, rebuild) -> None:
    """Add every embedded image missing from the index (exact, or IVF past the threshold)."""
    from evaluator.embedding.embed import model_key
    from evaluator.embedding.index import IndexConfig, record_index_run, update_index
    from evaluator.workspace.workdir import Workdir, workdir_lock

    try:
        wd = Workdir.at(workdir, create=False)
        key = model_key(model, pretrained)
        config = IndexConfig(ivf_threshold=ivf_threshold, nprobe=nprobe, target_recall=target_recall)
        with workdir_lock(wd, echo=click.echo):  # not while a score run updates the same index
            info = update_index(wd, key, config, rebuild=rebuild)
            if info.added:
                record_index_run(wd, info, config)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    recall = "exact" if info.kind == "flat" else f"nprobe {info.nprobe}, recall@10 {info.recall_at_10:.3f} on {info.recall_queries} queries"
    click.echo(f"{key}: {info.kind} index, {info.ntotal} vectors (+{info.added}), dim {info.dim}, {recall} -> {wd.index(key)}")


def _search(workdir, model, pretrained, text, image, image_id, k, device, artists, checkpoint) -> None:
    import numpy as np

    from evaluator.embedding.embed import (
        embed_image_files,
        embed_texts,
        load_clip,
        model_key,
        text_cache_dir,
    )
    from evaluator.embedding.index import load_index, search_by_vector
    from evaluator.workspace.store import connect
    from evaluator.workspace.workdir import Workdir

    given = [x is not None for x in (text, image, image_id)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of --text, --image, --image-id")
    wd = Workdir.at(workdir, create=False)
    if image_id is not None and not artists:
        key = model_key(model, pretrained)
        index, _ = load_index(wd, key)
        try:
            vec = index.reconstruct(int(image_id))
        except RuntimeError:
            raise click.ClickException(f"image id {image_id} is not in the index of {key}") from None
        query = np.asarray(vec)[None]
    else:
        clip = load_clip(model, pretrained, device)
        key = clip.key
        if text is not None:
            query = embed_texts(clip, [text], cache_dir=text_cache_dir(wd, key))
        elif image is not None:
            query = embed_image_files(clip, [image])
        else:
            index, _ = load_index(wd, key)
            query = np.asarray(index.reconstruct(int(image_id)))[None]
    if artists:
        _search_artists(wd, key, query, checkpoint, k)
        return
    index, meta = load_index(wd, key)
    sims, ids = search_by_vector(index, query, k)
    found = [int(i) for i in ids[0] if i >= 0]
    info = {}
    if wd.store.is_file() and found:
        con = connect(wd.store, read_only=True)
        try:
            placeholders = ",".join("?" * len(found))
            for row in con.execute(
                f"SELECT image_id, checkpoint, artist_id, template, seed, path FROM images WHERE image_id IN ({placeholders})",
                found,
            ).fetchall():
                info[row[0]] = row[1:]
        finally:
            con.close()
    click.echo(f"{key} ({meta.get('kind', '?')} index, {meta.get('ntotal', '?')} images)")
    click.echo(f"{'rank':>4}  {'cos':>6}  {'image_id':>20}  checkpoint / artist / template / seed  path")
    for rank, (s, i) in enumerate(zip(sims[0], ids[0], strict=True), start=1):
        if i < 0:
            continue
        ck, ar, tp, sd, path = info.get(int(i), ("?", "?", "?", "?", "?"))
        click.echo(f"{rank:>4}  {s:6.3f}  {int(i):>20}  {ck} / {ar} / {tp} / {sd}  {path}")


def _search_artists(wd, key, query, checkpoint, k) -> None:
    from evaluator.embedding.embed import load_embeddings
    from evaluator.embedding.index import build_centroid_index
    from evaluator.workspace.store import connect

    if checkpoint is None:
        raise click.UsageError("--artists needs --checkpoint (artist centroids are per checkpoint)")
    con = connect(wd.store, read_only=True)
    try:
        rows = con.execute(
            "SELECT image_id, artist_id FROM images WHERE checkpoint = ? AND error IS NULL AND artist_id <> '_baseline'",
            [checkpoint],
        ).df()
    finally:
        con.close()
    if rows.empty:
        raise click.ClickException(f"checkpoint {checkpoint!r} has no images in {wd.store}")
    ids, vecs = load_embeddings(wd, key, ids=rows["image_id"].tolist())
    artist_of = dict(zip(rows["image_id"], rows["artist_id"], strict=True))
    cidx = build_centroid_index(checkpoint, [artist_of[int(i)] for i in ids], vecs)
    click.echo(f"nearest artists of checkpoint {checkpoint} ({key}):")
    for rank, (artist, sim) in enumerate(cidx.search(query, k)[0], start=1):
        click.echo(f"{rank:>4}  {sim:6.3f}  {artist}")


@click.command("search")
@WORKDIR
@MODEL
@PRETRAINED
@click.option("--text", "-t", default=None, help="Query text, embedded by the model.")
@click.option("--image", "-i", default=None, type=click.Path(dir_okay=False, exists=True), help="Query image file.")
@click.option("--image-id", default=None, type=int, help="An image already in the index.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Results to show.")
@click.option("--artists", is_flag=True, help="Return nearest artists (centroids of --checkpoint) instead of images.")
@click.option("--checkpoint", default=None, help="With --artists: whose artist centroids.")
@DEVICE
def search_cmd(workdir, model, pretrained, text, image, image_id, k, artists, checkpoint, device) -> None:
    """Nearest images (or artists) to a text, an image file, or an indexed image."""
    try:
        _search(workdir, model, pretrained, text, image, image_id, k, device, artists, checkpoint)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        _fail(exc)


# The same command is `atelier search` and `atelier index search`.
index_group.add_command(search_cmd)


# ------------------------------------------------------------------ score


@click.command("score")
@WORKDIR
@MODEL
@PRETRAINED
@click.option("--catalog", "catalog_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="styles.csv to identify against (default: atelier's).")
@click.option("--templates-file", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Extra prompt templates (TOML).")
@click.option("--compare", "compare", multiple=True, metavar="BASE:FINETUNE", help="Compare a fine-tune with its base (repeatable); checkpoint records' `base` are compared anyway.")
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=1), help="Bootstrap resamples over seeds.")
@click.option("--k-neighbors", default=10, show_default=True, type=click.IntRange(min=1), help="Nearest artists stored per artist.")
@click.option("--retrieval-k", default=10, show_default=True, type=click.IntRange(min=1), help="k of retrieval_map@k.")
@click.option("--ivf-threshold", default=200_000, show_default=True, type=click.IntRange(min=1), help="FAISS: exact search below, IVF from here.")
@DEVICE
@DTYPE
@BATCH
@WORKERS
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def score_cmd(workdir, model, pretrained, catalog_path, templates_file, compare, bootstrap, k_neighbors, retrieval_k,
              ivf_threshold, device, dtype, batch_size, num_workers, quiet) -> None:
    """Ingest manifests, embed, index and score every image into DIR/atelier.duckdb.

    \b
    Writes images, image_scores, artist_scores (n, CI over seeds), checkpoint_scores,
    artist_neighbors and comparisons (fine-tune vs base: delta, CI, verdict) in one
    transaction. A rerun with nothing new writes nothing; a new checkpoint scores only
    its own images.
    """
    from evaluator.embedding.index import IndexConfig
    from evaluator.scoring.run import ScoreConfig, score
    from evaluator.workspace.store import StoreLockedError

    pairs = [_parse_pair(c) for c in compare]
    cfg = ScoreConfig(
        model=model, pretrained=pretrained, device=device, dtype=dtype, catalog_path=catalog_path,
        templates_path=templates_file, bootstrap=bootstrap, k_neighbors=k_neighbors, retrieval_k=retrieval_k,
        base_pairs=pairs or None, batch_size=batch_size, num_workers=num_workers,
        index=IndexConfig(ivf_threshold=ivf_threshold), progress=not quiet,
    )
    import duckdb

    try:
        summary = score(workdir, cfg, echo=click.echo)
    except (ValueError, RuntimeError, StoreLockedError, OSError) as exc:  # OSError: disk full, permissions
        _fail(exc)
    except duckdb.Error as exc:  # e.g. the commit could not write the WAL: rolled back
        raise click.ClickException(
            f"writing the store {Path(workdir) / 'atelier.duckdb'} failed, nothing was written (it is as before): {exc}"
        ) from exc
    if not summary.noop:
        idx = summary.index
        click.echo(f"index: {idx.get('kind')} over {idx.get('ntotal')} images (recall@10 {idx.get('recall_at_10')})")


# ------------------------------------------------------------------ metrics


@click.group("metrics")
def metrics_group() -> None:
    """The metrics registry."""


@metrics_group.command("list")
def metrics_list() -> None:
    """Print every metric: name, level, direction, whether it needs references, definition."""
    from evaluator.scoring.metrics import metrics_table

    click.echo(metrics_table())


# ------------------------------------------------------------------ references


@click.group("references")
def references_group() -> None:
    """Reference works of an artist (real paintings) for reference_similarity, mAP@k, fd_clip."""


@references_group.command("add")
@click.argument("artist")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@WORKDIR
@click.option("--model", "-m", envvar="ATELIER_CLIP_MODEL", default=None, help="Also embed them now and store the prototype (else `atelier score` does).")
@PRETRAINED
@click.option("--catalog", "catalog_path", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Catalog to check ARTIST against.")
def references_add(artist, folder, workdir, model, pretrained, catalog_path) -> None:
    """Import the images of FOLDER as reference works of ARTIST (an artist_id)."""
    from evaluator.embedding.embed import load_clip
    from evaluator.ingest.references import add_references
    from evaluator.workspace.workdir import Workdir

    try:
        wd = Workdir.at(workdir)
        clip = load_clip(model, pretrained) if model else None
        result = add_references(wd, artist, folder, clip=clip, catalog_path=catalog_path)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    click.echo(f"{artist}: {len(result.added)} reference images ({result.imported} new, {len(result.errors)} unreadable)"
               + (f" -> {result.shard}" if result.shard else ""))
    for path, error in result.errors.items():
        click.echo(f"  {path}: {error}", err=True)
    if result.prototype_models:
        click.echo(f"  prototype stored for {', '.join(result.prototype_models)}")


# ------------------------------------------------------------------ sql


@click.command("sql")
@WORKDIR
@click.argument("query")
@click.option("--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "csv", "json"]))
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1), help="Rows shown at most (table format).")
def sql_cmd(workdir, query, fmt, limit) -> None:
    """Run a read-only SQL query on DIR/atelier.duckdb (waits briefly while a writer holds it)."""
    import duckdb

    from evaluator.workspace.store import StoreLockedError, connect
    from evaluator.workspace.workdir import Workdir

    try:
        wd = Workdir.at(workdir, create=False)
        # No file access beyond the store (read_csv('/etc/passwd'), COPY ... TO), no
        # extension downloads, and a query cannot turn either back on.
        con = connect(wd.store, read_only=True, config={
            "enable_external_access": False, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False, "lock_configuration": True,
        })
    except (FileNotFoundError, StoreLockedError) as exc:
        _fail(exc)
    try:
        frame = con.execute(query).df()
    except duckdb.PermissionException as exc:
        raise click.ClickException(f"refused: `atelier sql` reads only the store {wd.store}, no other file: {exc}") from exc
    except duckdb.Error as exc:
        raise click.ClickException(f"SQL error: {exc}") from exc
    finally:
        con.close()
    if fmt == "csv":
        # A cell a spreadsheet would run as a formula (=HYPERLINK(...) in a prompt or a
        # note) gets a leading apostrophe, as the dashboard's CSV export does.
        from pandas.api.types import is_object_dtype, is_string_dtype

        for column in frame.columns:
            if is_object_dtype(frame[column]) or is_string_dtype(frame[column]):
                frame[column] = frame[column].map(
                    lambda v: "'" + v if isinstance(v, str) and v.startswith(("=", "+", "-", "@", "\t", "\r")) else v
                )
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso"))
    else:
        shown = frame.head(limit)
        click.echo(shown.to_string(index=False) if len(shown) else "(no rows)")
        if len(frame) > limit:
            click.echo(f"... {len(frame) - limit} more rows (use --limit or --format csv)")


COMMANDS: list = [embed_cmd, index_group, score_cmd, metrics_group, references_group, search_cmd, sql_cmd]
