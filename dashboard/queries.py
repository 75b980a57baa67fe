"""The dashboard's SQL, and the read-only connections that run them.

The statements that `atelier serve` runs too live in ``evaluator.workspace.queries``
(one place for each) and are re-exported here under their old names; this module keeps
the dashboard-only ones, the cached ``Store`` and its sessions.

DuckDB lets no process open a file while another holds it for writing, so the
dashboard never keeps a connection across reruns: a page run opens the store read-only
on its first uncached query (``Store.session``), shares that connection among its
queries, and closes it when the run ends (outside a session, each query opens and
closes its own), waiting briefly (``store.connect`` retries) when a scoring run holds
the lock. Results are cached by ``st.cache_data`` with the store file's (mtime, size)
in the key: a committed write changes the stamp, so the cache drops by itself. If the
lock outlasts the wait, the last result of the same query is returned and a notice is
queued for the page (``take_notices``), instead of an exception.

All connections of this process use one DuckDB configuration, the store's
``READ_ONLY_CONFIG`` (``store.connect_read_only``): external access off (no file outside
the store can be read, not even by the SQL page), extension autoloading off, configuration
locked. DuckDB refuses two connections to one file with different configurations, so no
query here uses another.

This module never imports torch; pandas, duckdb and streamlit only.
"""

from __future__ import annotations

import collections
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from evaluator.errors import StateError
from evaluator.workspace.queries import (  # noqa: F401 - re-exported: the pages' names
    CURATION_SORTS,
    SQL_MAX_CHARS,
    SQL_ROW_LIMIT,
    SQL_TIME_LIMIT,
    ArtistFilter,
    CurationFilter,
    UnsafeQueryError,
    UserQueryResult,
    artist_neighbors_of,
    check_user_sql,
    checkpoint_names,
    checkpoint_provenance,
    comparison_pairs,
    comparison_summary,
    comparison_table,
    csv_bytes,
    curated_files,
    has_curation,
    image_detail,
    image_file,
    images_by_ids,
    keep_spare_worker,
    leaderboard,
    models,
    neutralize_formulas,
    overview,
    run_user_sql,
)
from evaluator.workspace.queries import compare_where as _compare_where
from evaluator.workspace.settings import DEFAULT_DASHBOARD_LOCK_TIMEOUT
from evaluator.workspace.store import StoreLockedError, connect_read_only
from evaluator.workspace.workdir import STORE_NAME, Workdir

# How long a page waits for a writer to release the store before showing cached results.
DEFAULT_LOCK_TIMEOUT = DEFAULT_DASHBOARD_LOCK_TIMEOUT


def lock_timeout_from_env(environ: dict | None = None) -> float:
    """``ATELIER_DASHBOARD_LOCK_TIMEOUT`` (seconds) or the default; read on every page run."""
    from evaluator.workspace import settings

    return settings.dashboard_lock_timeout(environ)

_LAST_RESULTS: collections.OrderedDict[tuple, pd.DataFrame] = collections.OrderedDict()
_LAST_LOCK = threading.Lock()
_LAST_MAX = 512
_NOTICES = threading.local()


class StoreBusyError(StateError):
    """The store stayed locked by a writer and no earlier result of this query exists."""


def take_notices() -> list[str]:
    """Notices queued by queries of this thread since the last call (stale results)."""
    notices = list(getattr(_NOTICES, "items", []))
    _NOTICES.items = []
    return notices


def _notice(message: str) -> None:
    items = getattr(_NOTICES, "items", None)
    if items is None:
        items = _NOTICES.items = []
    if message not in items:
        items.append(message)


def _is_transient(exc: Exception) -> bool:
    text = str(exc)
    return "different configuration" in text


def _open(path: str, lock_timeout: float):
    """A read-only connection; retries a same-process configuration clash briefly."""
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            return connect_read_only(path, timeout=lock_timeout)
        except Exception as exc:  # noqa: BLE001 - only the transient kind is retried
            if _is_transient(exc) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise


class _Session:
    """One page run's connection: opened on the first cache miss, closed when the run ends.

    Opening the store costs more than most of the dashboard's queries (50-90 ms for
    the 1M-image store on a busy 2-core machine), so a page run shares one connection
    among its queries; it is never kept across reruns, so a writer waits at most one
    page render. After a lock timeout the rest of the run does not wait again.
    """

    def __init__(self, path: str, lock_timeout: float) -> None:
        self.path, self.lock_timeout = path, lock_timeout
        self.con = None
        self.locked = False

    def connection(self):
        if self.locked:
            raise StoreLockedError(f"store {self.path} is locked by another process (this page run already waited)")
        if self.con is None:
            try:
                self.con = _open(self.path, self.lock_timeout)
            except StoreLockedError:
                self.locked = True
                raise
        return self.con

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


_SESSION = threading.local()


def _read_frame(path: str, sql: str, params: tuple, lock_timeout: float) -> pd.DataFrame:
    """Run one statement read-only: on the page run's connection, or on its own one."""
    session: _Session | None = getattr(_SESSION, "current", None)
    if session is not None and session.path == path:
        return session.connection().execute(sql, list(params)).df()
    con = _open(path, lock_timeout)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


@st.cache_data(max_entries=1024, show_spinner=False)
def _cached_frame(path: str, stamp: tuple, sql: str, params: tuple, lock_timeout: float) -> pd.DataFrame:
    return _read_frame(path, sql, params, lock_timeout)


@dataclass(frozen=True)
class Store:
    """The store of one workdir, read-only. ``use_cache=False`` for the bench."""

    workdir: Path
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    use_cache: bool = True

    @classmethod
    def at(cls, workdir: str | Path, **kwargs) -> Store:
        return cls(Workdir.at(workdir, create=False).root, **kwargs)

    @property
    def path(self) -> Path:
        return self.workdir / STORE_NAME

    @property
    def wd(self) -> Workdir:
        return Workdir(self.workdir)

    def exists(self) -> bool:
        return self.path.is_file()

    def stamp(self) -> tuple:
        """(mtime, size) of the store and of its WAL: any committed write changes it."""
        parts: list = []
        for candidate in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                stat = candidate.stat()
                parts += [stat.st_mtime_ns, stat.st_size]
            except FileNotFoundError:
                parts += [0, 0]
        return tuple(parts)

    def schema_behind(self) -> int | None:
        """The store's schema version when older than this atelier's (then pages would fail), else None."""
        from evaluator.workspace.store import SCHEMA_VERSION

        frame = self.df("SELECT max(version) AS version FROM schema_migrations")
        version = int(frame["version"].iloc[0]) if len(frame) and pd.notna(frame["version"].iloc[0]) else 0
        return version if version < SCHEMA_VERSION else None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Share one read-only connection among the queries of a block (one page run)."""
        previous = getattr(_SESSION, "current", None)
        session = _Session(str(self.path), self.lock_timeout)
        _SESSION.current = session
        try:
            yield
        finally:
            _SESSION.current = previous
            session.close()

    def df(self, sql: str, params: tuple | list = ()) -> pd.DataFrame:
        """Run one read-only query; on a lasting lock, the last result with a notice."""
        params = tuple(tuple(p) if isinstance(p, list) else p for p in params)
        key = (str(self.path), sql, params)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"store {self.path} does not exist; run `atelier score` or `atelier demo --workdir "
                f"{self.workdir}` first"
            )
        try:
            if self.use_cache:
                frame = _cached_frame(str(self.path), self.stamp(), sql, params, self.lock_timeout)
            else:
                frame = _read_frame(str(self.path), sql, params, self.lock_timeout)
        except StoreLockedError as exc:
            with _LAST_LOCK:
                last = _LAST_RESULTS.get(key)
            if last is None:
                raise StoreBusyError(
                    f"the store {self.path} is being written by another process; "
                    "this page will show it once the write is committed (rerun in a moment)"
                ) from exc
            _notice(
                "The store is being written by another process: showing the last committed "
                "results; rerun in a moment for fresh ones."
            )
            return last.copy()
        with _LAST_LOCK:
            _LAST_RESULTS[key] = frame
            _LAST_RESULTS.move_to_end(key)
            while len(_LAST_RESULTS) > _LAST_MAX:
                _LAST_RESULTS.popitem(last=False)
        return frame

    def scalar(self, sql: str, params: tuple | list = ()):
        frame = self.df(sql, params)
        return None if frame.empty else frame.iat[0, 0]


# Metrics where a smaller value is better (a rank, a distance, a leak), used when the
# evaluator's registry (light: no torch) does not know the metric; the rest: higher.
LOWER_IS_BETTER = {"artist_rank", "fd_clip", "content_leak"}


def lower_is_better(metric: str) -> bool:
    """The metric's direction, from the evaluator's registry when it knows the metric."""
    try:
        from evaluator.scoring.metrics import get_metric

        return not get_metric(metric).higher_is_better
    except Exception:  # noqa: BLE001 - an unknown metric or an older evaluator
        return metric in LOWER_IS_BETTER


def workdir_from_args(argv: list[str], environ: dict) -> str | None:
    """``--workdir`` after ``--`` in the streamlit arguments wins over ATELIER_WORKDIR."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workdir")
    known, _ = parser.parse_known_args(argv)
    from evaluator.workspace import settings

    return known.workdir or settings.dashboard_workdir(environ)


# ---------------------------------------------------------------- filters


def filter_options(store: Store) -> dict[str, list[str]]:
    """Distinct tags, movements and mediums of the catalog (split on "; ")."""
    frame = store.df(
        """SELECT 'tag' AS kind, v FROM (SELECT DISTINCT unnest(string_split(tags, '; ')) AS v FROM artists)
           UNION ALL SELECT 'movement', v FROM (SELECT DISTINCT unnest(string_split(movements, '; ')) AS v FROM artists)
           UNION ALL SELECT 'medium', v FROM (SELECT DISTINCT unnest(string_split(mediums, '; ')) AS v FROM artists)"""
    )
    frame = frame[frame["v"].fillna("").str.len() > 0]
    return {kind: sorted(frame.loc[frame["kind"] == kind, "v"].tolist()) for kind in ("tag", "movement", "medium")}


# ---------------------------------------------------------------- overview


# ---------------------------------------------------------------- leaderboard


def score_runs(store: Store) -> pd.DataFrame:
    return store.df(
        """SELECT run_id, started_at, status, git_rev, device, versions::VARCHAR AS versions,
                  config::VARCHAR AS settings FROM runs WHERE kind = 'score'
           ORDER BY started_at DESC NULLS LAST LIMIT 20"""
    )


def metric_histogram(store: Store, model: str, metric: str, bins: int = 30) -> pd.DataFrame:
    """Per-checkpoint histogram of one metric over artists, binned in SQL (no raw rows)."""
    frame = store.df(
        """WITH s AS (SELECT checkpoint, value FROM artist_scores
                      WHERE model = ? AND metric = ? AND value IS NOT NULL AND isfinite(value)),
                r AS (SELECT min(value) AS lo, max(value) AS hi FROM s)
           SELECT checkpoint,
                  least(CAST(floor((value - lo) / CASE WHEN hi > lo THEN hi - lo ELSE 1 END * ?) AS INTEGER), ? - 1) AS bin,
                  count(*) AS artists, any_value(lo) AS lo, any_value(hi) AS hi
           FROM s, r GROUP BY ALL ORDER BY checkpoint, bin""",
        (model, metric, bins, bins),
    )
    return _bin_edges(frame, bins)


def _bin_edges(frame: pd.DataFrame, bins: int) -> pd.DataFrame:
    if frame.empty:
        return frame.assign(start=[], end=[])
    lo, hi = float(frame["lo"].iloc[0]), float(frame["hi"].iloc[0])
    width = (hi - lo) / bins if hi > lo else 1.0 / bins
    frame = frame.copy()
    frame["start"] = lo + frame["bin"] * width
    frame["end"] = frame["start"] + width
    return frame.drop(columns=["lo", "hi"])


# ---------------------------------------------------------------- compare


def comparison_points(store: Store, base: str, finetune: str, model: str, metric: str,
                      filt: ArtistFilter = ArtistFilter(), limit: int = 10_000,
                      verdicts: tuple[str, ...] = ()) -> pd.DataFrame:
    """Points of the base-vs-fine-tune scatter (all artists up to ``limit``, gains and losses first)."""
    where, params = _compare_where(base, finetune, model, metric, filt)
    if verdicts:
        where += " AND coalesce(c.verdict, 'undecided') IN (SELECT unnest(?))"
        params.append(list(verdicts))
    return store.df(
        f"""SELECT ar.name, c.artist_id, c.base_value, c.finetune_value, c.delta, c.ci_low, c.ci_high,
                   coalesce(c.verdict, 'undecided') AS verdict
            FROM comparisons c JOIN artists ar USING (artist_id) WHERE {where}
            ORDER BY c.verdict = 'kept', abs(c.delta) DESC NULLS LAST, c.artist_id LIMIT ?""",
        [*params, int(limit)],
    )


def verdict_matrix(store: Store, base: str, finetune: str, model: str, artist_ids: list[str]) -> pd.DataFrame:
    """Every metric's verdict, delta and CI for the given artists of one comparison (long form)."""
    if not artist_ids:
        return pd.DataFrame(columns=["artist_id", "name", "metric", "delta", "ci_low", "ci_high", "verdict"])
    return store.df(
        """SELECT c.artist_id, ar.name, c.metric, c.delta, c.ci_low, c.ci_high,
                  coalesce(c.verdict, 'undecided') AS verdict
           FROM comparisons c JOIN artists ar USING (artist_id)
           WHERE c.base = ? AND c.finetune = ? AND c.model = ? AND c.artist_id IN (SELECT unnest(?))
           ORDER BY c.metric, c.artist_id""",
        [base, finetune, model, list(artist_ids)],
    )


def pair_thumbnails(store: Store, base: str, finetune: str, artist_ids: list[str]) -> pd.DataFrame:
    """Per artist, one base image and the fine-tune's image of the same template and seed."""
    if not artist_ids:
        return pd.DataFrame(columns=["artist_id", "template", "seed", "base_thumb", "finetune_thumb"])
    return store.df(
        """WITH b AS (SELECT artist_id, template, seed, thumb_path, image_id FROM images
                      WHERE checkpoint = ? AND error IS NULL AND artist_id IN (SELECT unnest(?))),
                f AS (SELECT artist_id, template, seed, thumb_path, image_id FROM images
                      WHERE checkpoint = ? AND error IS NULL AND artist_id IN (SELECT unnest(?)))
           SELECT b.artist_id, b.template, b.seed, b.thumb_path AS base_thumb, f.thumb_path AS finetune_thumb,
                  b.image_id AS base_image, f.image_id AS finetune_image
           FROM b JOIN f USING (artist_id, template, seed)
           QUALIFY row_number() OVER (PARTITION BY b.artist_id ORDER BY b.template, b.seed) = 1
           ORDER BY b.artist_id""",
        [base, list(artist_ids), finetune, list(artist_ids)],
    )


def delta_histogram(store: Store, base: str, finetune: str, model: str, metric: str,
                    filt: ArtistFilter = ArtistFilter(), bins: int = 40) -> pd.DataFrame:
    where, params = _compare_where(base, finetune, model, metric, filt)
    frame = store.df(
        f"""WITH s AS (SELECT c.delta, c.verdict FROM comparisons c JOIN artists ar USING (artist_id)
                       WHERE {where} AND c.delta IS NOT NULL AND isfinite(c.delta)),
                 r AS (SELECT min(delta) AS lo, max(delta) AS hi FROM s)
            SELECT least(CAST(floor((delta - lo) / CASE WHEN hi > lo THEN hi - lo ELSE 1 END * ?) AS INTEGER), ? - 1) AS bin,
                   verdict, count(*) AS artists, any_value(lo) AS lo, any_value(hi) AS hi
            FROM s, r GROUP BY ALL ORDER BY bin, verdict""",
        [*params, bins, bins],
    )
    return _bin_edges(frame, bins)


# ---------------------------------------------------------------- gallery

def gallery_artists(store: Store, filt: ArtistFilter, limit: int, offset: int,
                    delta_of: tuple | None = None) -> tuple[pd.DataFrame, int]:
    """One page of catalog artists that have generated images (scored or not), and the total.

    ``delta_of`` = (base, finetune, model, metric, descending) orders them by that comparison's
    delta (artists it has no delta for last), else by name.
    """
    where, params = filt.where("ar")
    order, order_params = "name, artist_id", []
    if delta_of is not None:
        base, finetune, model, metric, descending = delta_of
        order = (f"(SELECT c.delta FROM comparisons c WHERE c.artist_id = shown.artist_id AND c.base = ? "
                 f"AND c.finetune = ? AND c.model = ? AND c.metric = ?) {'DESC' if descending else 'ASC'} "
                 "NULLS LAST, name, artist_id")
        order_params = [base, finetune, model, metric]
    frame = store.df(
        f"""WITH shown AS (SELECT ar.artist_id, ar.name FROM artists ar
                           WHERE {where} AND ar.artist_id IN (SELECT DISTINCT artist_id FROM images WHERE source = 'generated'))
            SELECT artist_id, name, (SELECT count(*) FROM shown) AS total
            FROM shown ORDER BY {order} LIMIT ? OFFSET ?""",
        [*params, *order_params, int(limit), int(offset)],
    )
    total = int(frame["total"].iloc[0]) if not frame.empty else 0
    if frame.empty and offset > 0:
        total = int(store.scalar(
            f"""SELECT count(*) FROM artists ar WHERE {where}
                AND ar.artist_id IN (SELECT DISTINCT artist_id FROM images WHERE source = 'generated')""", params) or 0)
    return frame.drop(columns=["total"]), total


def gallery_cells(store: Store, artist_ids: list[str], template: str, seeds: list[int],
                  checkpoints: list[str]) -> pd.DataFrame:
    """The images of a gallery page: artists x checkpoints x seeds for one template; the
    no-artist baseline (``_baseline``) with whichever baseline template it was made with."""
    return store.df(
        """SELECT image_id, artist_id, checkpoint, seed, thumb_path, path, error FROM images
           WHERE source = 'generated' AND seed IN (SELECT unnest(?)) AND checkpoint IN (SELECT unnest(?))
             AND ((artist_id = '_baseline' AND '_baseline' IN (SELECT unnest(?)))
                  OR (artist_id IN (SELECT unnest(?)) AND template = ?))
           QUALIFY row_number() OVER (PARTITION BY artist_id, checkpoint, seed ORDER BY template, image_id) = 1
           ORDER BY artist_id, checkpoint, seed""",
        [list(map(int, seeds)), list(checkpoints), list(artist_ids), list(artist_ids), template],
    )


def templates_and_seeds(store: Store) -> tuple[list[str], list[int]]:
    """Subject templates (not the no-artist baseline) and seeds present among the images."""
    templates = store.df(
        """SELECT name FROM templates WHERE name <> 'null'
           AND name IN (SELECT DISTINCT template FROM images WHERE source = 'generated') ORDER BY name"""
    )["name"].tolist()
    seeds = store.df(
        "SELECT DISTINCT seed FROM images WHERE source = 'generated' AND seed >= 0 ORDER BY seed LIMIT 1000"
    )["seed"].astype(int).tolist()
    return templates, seeds


def gallery_images(store: Store, artist_ids: list[str], template: str, seed: int,
                   checkpoints: list[str] | None = None) -> pd.DataFrame:
    """The images of a page: artists x checkpoints for one template and seed."""
    if not artist_ids:
        return pd.DataFrame(columns=["image_id", "artist_id", "checkpoint", "thumb_path", "path", "error"])
    sql = """SELECT image_id, artist_id, checkpoint, thumb_path, path, error FROM images
             WHERE artist_id IN (SELECT unnest(?)) AND template = ? AND seed = ? AND source = 'generated'"""
    params: list = [list(artist_ids), template, int(seed)]
    if checkpoints:
        sql += " AND checkpoint IN (SELECT unnest(?))"
        params.append(list(checkpoints))
    return store.df(sql + " ORDER BY artist_id, checkpoint", params)


# ---------------------------------------------------------------- artist

def artist_search(store: Store, text: str, limit: int = 200) -> pd.DataFrame:
    """Artists whose name, id or alias contains ``text``: artists with images first, then by name.

    A catalog of 9,000 artists of which a run generated a few dozen: the ones with
    images come first, so the default pick of the Artist page has something to show.
    """
    where, params = ArtistFilter(name=text).where("ar")
    return store.df(
        f"""SELECT ar.artist_id, ar.name FROM artists ar WHERE {where}
            ORDER BY ar.artist_id NOT IN (SELECT DISTINCT artist_id FROM images WHERE source = 'generated'),
                     NOT starts_with(lower(ar.name), ?), ar.name LIMIT ?""",
        [*params, text.strip().lower(), int(limit)],
    )


def artist_info(store: Store, artist_id: str) -> pd.DataFrame:
    return store.df("SELECT * FROM artists WHERE artist_id = ?", (artist_id,))


def artist_image_count(store: Store, artist_id: str) -> int:
    return int(store.scalar(
        "SELECT count(*) FROM images WHERE artist_id = ? AND source <> 'reference'", (artist_id,)) or 0)


def artist_images(store: Store, artist_id: str, limit: int = 24, offset: int = 0) -> pd.DataFrame:
    return store.df(
        """SELECT image_id, checkpoint, template, seed, thumb_path, path, error FROM images
           WHERE artist_id = ? AND source <> 'reference'
           ORDER BY template, seed, checkpoint LIMIT ? OFFSET ?""",
        (artist_id, int(limit), int(offset)),
    )


def artist_scores_of(store: Store, artist_id: str, model: str) -> pd.DataFrame:
    return store.df(
        """SELECT checkpoint, metric, value, ci_low, ci_high, n FROM artist_scores
           WHERE artist_id = ? AND model = ? ORDER BY metric, checkpoint""",
        (artist_id, model),
    )


def artist_comparisons_of(store: Store, artist_id: str, model: str) -> pd.DataFrame:
    return store.df(
        """SELECT base, finetune, metric, base_value, finetune_value, delta, ci_low, ci_high, verdict
           FROM comparisons WHERE artist_id = ? AND model = ? ORDER BY finetune, metric""",
        (artist_id, model),
    )


def artist_references(store: Store, artist_id: str) -> pd.DataFrame:
    return store.df(
        """SELECT i.image_id, i.path, i.thumb_path, i.prompt, i.width, i.height FROM reference_images r
           JOIN images i USING (image_id) WHERE r.artist_id = ? ORDER BY i.image_id""",
        (artist_id,),
    )


# ---------------------------------------------------------------- similarity

def neighbor_checkpoints(store: Store, model: str) -> list[str]:
    frame = store.df(
        "SELECT DISTINCT checkpoint FROM artist_scores WHERE model = ? ORDER BY checkpoint", (model,))
    return frame["checkpoint"].tolist()


def top_similar_pairs(store: Store, checkpoint: str, model: str, filt: ArtistFilter = ArtistFilter(),
                      limit: int = 100) -> pd.DataFrame:
    """The most alike artist pairs of a checkpoint (each unordered pair once)."""
    where, params = filt.where("ar")
    return store.df(
        f"""SELECT ar.name AS artist, nb.name AS neighbor, max(n.similarity) AS similarity,
                   least(n.artist_id, n.neighbor_id) AS a, greatest(n.artist_id, n.neighbor_id) AS b
            FROM artist_neighbors n JOIN artists ar ON ar.artist_id = n.artist_id
            LEFT JOIN artists nb ON nb.artist_id = n.neighbor_id
            WHERE n.checkpoint = ? AND n.model = ? AND {where}
            GROUP BY ALL ORDER BY similarity DESC, a, b LIMIT ?""",
        [checkpoint, model, *params, int(limit)],
    ).drop(columns=["a", "b"])


def similarity_matrix(store: Store, checkpoint: str, model: str, artist_ids: list[str]) -> pd.DataFrame:
    """Known similarities among a set of artists (pairs absent from the top-k stay empty)."""
    return store.df(
        """SELECT a.name AS artist, b.name AS neighbor, n.similarity
           FROM artist_neighbors n JOIN artists a ON a.artist_id = n.artist_id
           JOIN artists b ON b.artist_id = n.neighbor_id
           WHERE n.checkpoint = ? AND n.model = ? AND n.artist_id IN (SELECT unnest(?))
             AND n.neighbor_id IN (SELECT unnest(?))""",
        (checkpoint, model, list(artist_ids), list(artist_ids)),
    )


def checkpoint_artist_images(store: Store, checkpoint: str, artist_ids: list[str]) -> pd.DataFrame:
    """(image_id, artist_id) of a checkpoint's generated images of these artists (not the baseline)."""
    if not artist_ids:
        return pd.DataFrame(columns=["image_id", "artist_id"])
    return store.df(
        """SELECT image_id, artist_id FROM images
           WHERE checkpoint = ? AND error IS NULL AND artist_id IN (SELECT unnest(?)) ORDER BY image_id""",
        (checkpoint, list(artist_ids)),
    )


def artist_names(store: Store, artist_ids: list[str]) -> pd.DataFrame:
    return store.df(
        "SELECT artist_id, name FROM artists WHERE artist_id IN (SELECT unnest(?))", (list(artist_ids),))


# ---------------------------------------------------------------- runs

def runs(store: Store) -> pd.DataFrame:
    return store.df(
        """SELECT run_id, kind, status, started_at, finished_at,
                  date_diff('second', started_at, finished_at) AS seconds,
                  n_done, n_skipped, n_failed, host, device, dtype, git_rev, message,
                  config::VARCHAR AS config, versions::VARCHAR AS versions, timings::VARCHAR AS timings
           FROM runs ORDER BY started_at DESC NULLS LAST, run_id LIMIT 500"""
    )


def run_progress(store: Store) -> pd.DataFrame:
    """Images made and failed per generation run and checkpoint (one pass over `images`)."""
    return store.df(
        """SELECT run_id, checkpoint, count(*) AS images,
                  count(*) FILTER (WHERE error IS NOT NULL) AS failed,
                  min(created_at) AS first, max(created_at) AS last
           FROM images GROUP BY ALL ORDER BY run_id, checkpoint"""
    )


def scored_per_checkpoint(store: Store, model: str) -> pd.DataFrame:
    """Images scored per checkpoint, from the aggregate table (not a scan of image_scores).

    ``artist_scores.n`` counts the images behind each (checkpoint, artist, metric); the
    metric with the most images tells how many images of the checkpoint were scored.
    """
    return store.df(
        """SELECT checkpoint, max(images) AS scored FROM (
               SELECT checkpoint, metric, sum(n) AS images FROM artist_scores WHERE model = ? GROUP BY ALL)
           GROUP BY checkpoint ORDER BY checkpoint""",
        (model,),
    )


def embedding_errors(store: Store, limit: int = 100) -> pd.DataFrame:
    """Images the embedder could not read (table added by the evaluator's migration 2)."""
    exists = store.scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'embedding_errors'")
    if not exists:
        return pd.DataFrame(columns=["image_id", "model", "error", "run_id", "path"])
    return store.df(
        """SELECT e.image_id, e.model, e.error, e.run_id, i.path FROM embedding_errors e
           LEFT JOIN images i USING (image_id) ORDER BY e.run_id DESC NULLS LAST, e.image_id LIMIT ?""",
        (int(limit),),
    )


def error_images(store: Store, limit: int = 100, offset: int = 0) -> tuple[pd.DataFrame, int]:
    frame = store.df(
        """SELECT image_id, run_id, checkpoint, artist_id, template, seed, error, created_at,
                  count(*) OVER () AS total
           FROM images WHERE error IS NOT NULL
           ORDER BY created_at DESC NULLS LAST, image_id LIMIT ? OFFSET ?""",
        (int(limit), int(offset)),
    )
    total = int(frame["total"].iloc[0]) if not frame.empty else 0
    return frame.drop(columns=["total"]), total


# ---------------------------------------------------------------- SQL page

EXAMPLE_QUERIES: dict[str, str] = {
    "Leaderboard (one metric)": (
        "SELECT checkpoint, model, value, ci_low, ci_high\nFROM checkpoint_scores\n"
        "WHERE metric = 'artist_similarity'\nORDER BY value DESC"
    ),
    "Artists lost by each fine-tune": (
        "SELECT finetune, metric, count(*) AS lost\nFROM comparisons\nWHERE verdict = 'lost'\n"
        "GROUP BY ALL ORDER BY lost DESC"
    ),
    "Biggest losses (artist_similarity)": (
        "SELECT c.finetune, a.name, c.base_value, c.finetune_value, c.delta, c.ci_low, c.ci_high\n"
        "FROM comparisons c JOIN artists a USING (artist_id)\n"
        "WHERE c.metric = 'artist_similarity' AND c.verdict = 'lost'\nORDER BY c.delta LIMIT 50"
    ),
    "Most alike artist pairs (base)": (
        "SELECT n.artist_id, n.neighbor_id, n.similarity\nFROM artist_neighbors n\n"
        "WHERE n.checkpoint = 'base' AND n.rank = 1\nORDER BY n.similarity DESC LIMIT 50"
    ),
    "Recognition by movement": (
        "SELECT m.movement, s.checkpoint, avg(s.value) AS recognized, count(*) AS artists\n"
        "FROM artist_scores s\nJOIN (SELECT artist_id, unnest(string_split(movements, '; ')) AS movement FROM artists) m\n"
        "  USING (artist_id)\nWHERE s.metric = 'recognized'\nGROUP BY ALL ORDER BY movement, checkpoint"
    ),
    "Failed images": (
        "SELECT run_id, checkpoint, artist_id, template, seed, error\nFROM images\n"
        "WHERE error IS NOT NULL\nORDER BY created_at DESC LIMIT 100"
    ),
    "Tables and columns": "DESCRIBE images",
}


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# ---------------------------------------------------------------- files

