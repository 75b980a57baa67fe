"""The SQL that more than one reader of the store runs: the dashboard and `atelier serve`.

Reads DIR/atelier.duckdb through a ``Reader`` (anything with ``df(sql, params)``,
``scalar(sql, params)``, ``path`` and ``lock_timeout``): the dashboard's cached ``Store``
or the server's per-request reader. Writes nothing. Each statement lives here once; the
dashboard's ``queries`` module re-exports these names, so its pages and tests keep them.

The SQL page's guard (``check_user_sql`` / ``run_user_sql``) is here too: one statement,
SELECT only, on a ``USER_SQL_CONFIG`` connection (no file beyond the store, DuckDB memory
and threads capped) in a child process with a capped address space (this module run as
``python -m evaluator.workspace.queries``), with row, byte and time limits. The child
writes only its stdout. pandas and duckdb only; never torch.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from catalog.schema import guard_formula
from evaluator.errors import InputError
from evaluator.workspace.store import READ_ONLY_CONFIG, connect
from evaluator.workspace.workdir import Workdir

# Limits of a user's SQL: 10,000 rows is more than a person reads and keeps a page or a
# response light; 10 s stops a runaway cross join long before it eats the machine.
SQL_ROW_LIMIT = 10_000
SQL_TIME_LIMIT = 10.0
SQL_MAX_CHARS = 20_000
# 64 MB of Arrow data is far more than a page shows, and its CSV/Parquet copies stay small.
SQL_BYTE_LIMIT = 64 << 20
# DuckDB's own budget for a user query: sorts, joins and aggregates past it fail fast
# (no spilling to disk: a read-only query writes nothing, not even temporaries).
SQL_MEMORY_LIMIT = "1GB"
SQL_THREADS = 2
# The worker process's memory: DuckDB does not count a value a function builds (a string
# of repeat()), so a watchdog ends the worker past 1.5 GB resident, and its address space
# (~2.2 GB mapped before any result: libraries, allocator arenas) is capped at 4 GB.
SQL_RSS_LIMIT = 3 << 29
SQL_ADDRESS_LIMIT = 4 << 30

_WORKER_SLOT = threading.BoundedSemaphore(1)

# The connection of a user's query: the read-only configuration plus the resource caps,
# all fixed at connect time (lock_configuration keeps a query from raising them).
USER_SQL_CONFIG: dict[str, object] = {
    **READ_ONLY_CONFIG,
    "memory_limit": SQL_MEMORY_LIMIT,
    "threads": SQL_THREADS,
    "temp_directory": "",
}


class Reader(Protocol):
    """What these functions need of a store: read-only queries and where the file is."""

    @property
    def path(self) -> Path: ...

    @property
    def lock_timeout(self) -> float: ...

    def df(self, sql: str, params: tuple | list = ()) -> pd.DataFrame: ...

    def scalar(self, sql: str, params: tuple | list = ()) -> Any: ...


class UnsafeQueryError(InputError):
    """A query the SQL page (or POST /sql) refuses to run (a write, several statements, a file read...)."""


# ---------------------------------------------------------------- filters

@dataclass(frozen=True)
class ArtistFilter:
    """Catalog filters shared by Compare and Gallery; empty fields filter nothing."""

    tag: str = ""
    movement: str = ""
    medium: str = ""
    recognized_column: str = "recognized_sdxl"  # or recognized_sd1
    recognized: str = ""  # yes | no | unsure | "" (any)
    name: str = ""
    # The scorer's automatic verdict (metric `recognized` >= 0.5) for one checkpoint.
    auto_recognized: str = ""  # yes | no | "" (any)
    auto_checkpoint: str = ""
    auto_model: str = ""
    # An explicit set (e.g. the artists a Compare view carries to the Gallery); empty: all.
    artist_ids: tuple[str, ...] = ()

    def where(self, alias: str = "ar") -> tuple[str, list]:
        clauses, params = ["TRUE"], []
        if self.artist_ids:
            clauses.append(f"{alias}.artist_id IN (SELECT unnest(?))")
            params.append(list(self.artist_ids))
        for column, value in (("tags", self.tag), ("movements", self.movement), ("mediums", self.medium)):
            if value:
                clauses.append(f"list_contains(string_split(coalesce({alias}.{column}, ''), '; '), ?)")
                params.append(value)
        if self.recognized:
            if self.recognized_column not in ("recognized_sdxl", "recognized_sd1"):
                raise InputError(f"recognized_column must be recognized_sdxl or recognized_sd1 but is {self.recognized_column!r}")
            clauses.append(f"coalesce({alias}.{self.recognized_column}, '') = ?")
            params.append("" if self.recognized == "blank" else self.recognized)
        if self.name.strip():
            needle = self.name.strip().lower()
            clauses.append(
                f"(contains(lower({alias}.name), ?) OR contains({alias}.artist_id, ?) "
                f"OR contains(lower(coalesce({alias}.aliases, '')), ?))"
            )
            params += [needle, needle, needle]
        if self.auto_recognized:
            if self.auto_recognized not in ("yes", "no") or not self.auto_checkpoint:
                raise InputError(f"auto_recognized must be yes or no with a checkpoint but is {self.auto_recognized!r}")
            # "no" is a decided no (value < 0.5): an undecided artist (NULL) is neither.
            test = ">= 0.5" if self.auto_recognized == "yes" else "< 0.5"
            clauses.append(
                f"{alias}.artist_id IN (SELECT artist_id FROM artist_scores WHERE metric = 'recognized' "
                f"AND checkpoint = ? AND model = ? AND value {test})"
            )
            params += [self.auto_checkpoint, self.auto_model]
        return " AND ".join(clauses), params


# ---------------------------------------------------------------- overview

def overview(store: Reader) -> dict[str, int]:
    frame = store.df(
        """SELECT (SELECT count(*) FROM images WHERE source <> 'reference') AS images,
                  (SELECT count(*) FROM images WHERE error IS NOT NULL) AS errors,
                  (SELECT count(*) FROM artists) AS artists,
                  (SELECT count(DISTINCT artist_id) FROM artist_scores) AS artists_evaluated,
                  (SELECT count(*) FROM checkpoints) AS checkpoints,
                  (SELECT count(*) FROM runs) AS runs"""
    )
    return {k: int(v) for k, v in frame.iloc[0].items()}


def models(store: Reader) -> list[str]:
    """Embedding models that scored something, the most used first."""
    frame = store.df(
        "SELECT model, sum(n) AS n FROM checkpoint_scores GROUP BY model ORDER BY n DESC NULLS LAST, model"
    )
    if frame.empty:
        frame = store.df("SELECT DISTINCT model FROM artist_scores ORDER BY model")
    return frame["model"].tolist()


def checkpoint_names(store: Reader) -> list[str]:
    """Checkpoints, bases first: the order of the gallery columns."""
    frame = store.df(
        """SELECT name FROM (SELECT name, base FROM checkpoints
                             UNION SELECT DISTINCT checkpoint, NULL FROM artist_scores
                             WHERE checkpoint NOT IN (SELECT name FROM checkpoints))
           ORDER BY base IS NOT NULL, name"""
    )
    return frame["name"].tolist()


# ---------------------------------------------------------------- leaderboard

def leaderboard(store: Reader, model: str) -> pd.DataFrame:
    """checkpoint_scores of one model, long form (checkpoint, metric, value, n, ci, and why a value is NULL)."""
    return store.df(
        """SELECT checkpoint, metric, value, ci_low, ci_high, n, n_pos, n_neg, reason, n_images, n_artists,
                  n_classes FROM checkpoint_scores
           WHERE model = ? ORDER BY checkpoint, metric""",
        (model,),
    )


def checkpoint_provenance(store: Reader) -> pd.DataFrame:
    """Checkpoints with their source, fingerprint and the runs that made their images."""
    return store.df(
        """WITH per_run AS (
               SELECT checkpoint, run_id, count(*) AS images FROM images
               WHERE checkpoint IS NOT NULL GROUP BY ALL),
           latest AS (
               SELECT p.checkpoint, r.run_id, r.started_at, r.git_rev, r.device, r.dtype AS run_dtype,
                      r.versions, r.config,
                      row_number() OVER (PARTITION BY p.checkpoint ORDER BY r.started_at DESC NULLS LAST) AS k
               FROM per_run p JOIN runs r USING (run_id))
           SELECT c.name AS checkpoint, c.kind, c.base, c.source, c.fingerprint, c.dtype, c.scheduler,
                  c.adapters::VARCHAR AS adapters, l.run_id AS last_run, l.started_at, l.git_rev, l.device,
                  l.versions::VARCHAR AS versions, l.config::VARCHAR AS settings, c.notes
           FROM checkpoints c LEFT JOIN latest l ON l.checkpoint = c.name AND l.k = 1
           ORDER BY c.base IS NOT NULL, c.name"""
    )


# ---------------------------------------------------------------- compare

def comparison_pairs(store: Reader) -> pd.DataFrame:
    """(base, finetune, model, metric) combinations present in `comparisons`."""
    return store.df(
        "SELECT DISTINCT base, finetune, model, metric FROM comparisons ORDER BY base, finetune, model, metric"
    )


def compare_where(base: str, finetune: str, model: str, metric: str, filt: ArtistFilter) -> tuple[str, list]:
    where, params = filt.where("ar")
    return (
        f"c.base = ? AND c.finetune = ? AND c.model = ? AND c.metric = ? AND {where}",
        [base, finetune, model, metric, *params],
    )


def comparison_summary(store: Reader, base: str, finetune: str, model: str, metric: str,
                       filt: ArtistFilter = ArtistFilter()) -> dict[str, float]:
    where, params = compare_where(base, finetune, model, metric, filt)
    frame = store.df(
        f"""SELECT count(*) FILTER (WHERE verdict = 'gained') AS gained,
                   count(*) FILTER (WHERE verdict = 'lost') AS lost,
                   count(*) FILTER (WHERE verdict = 'kept') AS kept,
                   count(*) FILTER (WHERE verdict = 'undecided') AS undecided,
                   count(*) AS artists, avg(delta) AS mean_delta
            FROM comparisons c JOIN artists ar USING (artist_id) WHERE {where}""",
        params,
    )
    row = frame.iloc[0]
    summary = {k: int(row[k]) for k in ("gained", "lost", "kept", "undecided", "artists")}
    mean = row["mean_delta"]
    summary["mean_delta"] = float(mean) if pd.notna(mean) else float("nan")
    return summary


def comparison_table(store: Reader, base: str, finetune: str, model: str, metric: str,
                     filt: ArtistFilter = ArtistFilter(), *, verdict: str = "", order: str = "delta",
                     descending: bool = True, limit: int = 100, offset: int = 0,
                     verdicts: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per-artist deltas, one page. ``order`` is a column name from a fixed list.

    The page settings after ``filt`` are keyword-only: a call reads as what it asks for.
    """
    columns = {"delta", "base_value", "finetune_value", "name", "ci_low", "ci_high"}
    if order not in columns:
        raise InputError(f"order must be one of {sorted(columns)} but is {order!r}")
    where, params = compare_where(base, finetune, model, metric, filt)
    if verdict:
        where += " AND c.verdict = ?"
        params.append(verdict)
    if verdicts:  # several at once (the Compare page's verdict filter)
        where += " AND coalesce(c.verdict, 'undecided') IN (SELECT unnest(?))"
        params.append(list(verdicts))
    direction = "DESC" if descending else "ASC"
    return store.df(
        f"""SELECT ar.name, c.artist_id, c.base_value, c.finetune_value, c.delta, c.ci_low, c.ci_high,
                   c.n, c.n_seeds, c.verdict, ar.movements, ar.mediums, ar.tags, ar.recognized_sdxl,
                   ar.recognized_sd1
            FROM comparisons c JOIN artists ar USING (artist_id)
            WHERE {where} ORDER BY {order} {direction} NULLS LAST, c.artist_id LIMIT ? OFFSET ?""",
        [*params, int(limit), int(offset)],
    )


# ---------------------------------------------------------------- images and artists

def image_detail(store: Reader, image_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One image's row (with the artist's name) and its per-image scores."""
    row = store.df(
        """SELECT i.*, ar.name AS artist_name FROM images i LEFT JOIN artists ar USING (artist_id)
           WHERE i.image_id = ?""",
        (int(image_id),),
    )
    scores = store.df(
        "SELECT model, metric, value FROM image_scores WHERE image_id = ? ORDER BY model, metric",
        (int(image_id),),
    )
    return row, scores


def artist_neighbors_of(store: Reader, artist_id: str, model: str, *, checkpoint: str = "",
                        k: int | None = None) -> pd.DataFrame:
    """An artist's nearest artists per checkpoint (one checkpoint if given; the first ``k``)."""
    sql = """SELECT n.checkpoint, n.rank, n.neighbor_id, ar.name AS neighbor, n.similarity
             FROM artist_neighbors n LEFT JOIN artists ar ON ar.artist_id = n.neighbor_id
             WHERE n.artist_id = ? AND n.model = ?"""
    params: list = [artist_id, model]
    if checkpoint:
        sql += " AND n.checkpoint = ?"
        params.append(checkpoint)
    if k is not None:
        sql += " AND n.rank <= ?"
        params.append(int(k))
    return store.df(sql + " ORDER BY n.checkpoint, n.rank", params)


def artists_page(store: Reader, filt: ArtistFilter, *, limit: int, offset: int, kind: str = "") -> pd.DataFrame:
    """One page of the catalog's artists (every column), by name; ``filt.name`` searches.

    ``kind`` (artist | character) needs the store's ``artists.kind`` column; a blank kind is
    an artist, as in the catalog.
    """
    where, params = filt.where("ar")
    if kind:
        where += " AND coalesce(nullif(ar.kind, ''), 'artist') = ?"
        params.append(kind)
    return store.df(
        f"SELECT ar.* FROM artists ar WHERE {where} ORDER BY ar.name, ar.artist_id LIMIT ? OFFSET ?",
        [*params, int(limit), int(offset)],
    )


@dataclass(frozen=True)
class ScoreFilter:
    """Which ``artist_scores`` rows: empty fields filter nothing."""

    model: str = ""
    checkpoint: str = ""
    artist_id: str = ""
    metric: str = ""


def artist_scores(store: Reader, filt: ScoreFilter, *, limit: int, offset: int) -> pd.DataFrame:
    """``artist_scores`` rows with their CIs and counts, one page, in key order."""
    clauses, params = ["TRUE"], []
    for column in ("model", "checkpoint", "artist_id", "metric"):
        value = getattr(filt, column)
        if value:
            clauses.append(f"s.{column} = ?")
            params.append(value)
    return store.df(
        f"""SELECT s.checkpoint, s.artist_id, ar.name, s.model, s.metric, s.value, s.ci_low, s.ci_high,
                   s.n, s.n_seeds, s.n_images, s.n_classes
            FROM artist_scores s LEFT JOIN artists ar USING (artist_id)
            WHERE {' AND '.join(clauses)}
            ORDER BY s.checkpoint, s.artist_id, s.model, s.metric LIMIT ? OFFSET ?""",
        [*params, int(limit), int(offset)],
    )


def metric_names(store: Reader) -> list[str]:
    """Metrics with stored values (per artist or compared): what a metric filter may name."""
    frame = store.df(
        "SELECT DISTINCT metric FROM (SELECT metric FROM artist_scores UNION ALL SELECT metric FROM comparisons) "
        "ORDER BY metric"
    )
    return frame["metric"].tolist()


def artist_ids(store: Reader) -> list[str]:
    """Every artist id of the catalog in the store (for close-name suggestions)."""
    return store.df("SELECT artist_id FROM artists ORDER BY artist_id")["artist_id"].tolist()


def table_columns(store: Reader, table: str) -> list[str]:
    """The columns of ``table`` in the store (a column a later migration adds may be missing)."""
    frame = store.df("SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", (table,))
    return frame["column_name"].tolist()


def artist_exists(store: Reader, artist_id: str) -> bool:
    return bool(store.scalar("SELECT count(*) FROM artists WHERE artist_id = ?", (artist_id,)))


def image_ids_of(store: Reader, *, checkpoint: str = "", artist_id: str = "") -> list[int]:
    """Ids of the images of a checkpoint and/or an artist (a search filter)."""
    clauses, params = ["error IS NULL"], []
    if checkpoint:
        clauses.append("checkpoint = ?")
        params.append(checkpoint)
    if artist_id:
        clauses.append("artist_id = ?")
        params.append(artist_id)
    frame = store.df(f"SELECT image_id FROM images WHERE {' AND '.join(clauses)}", params)
    return frame["image_id"].astype("int64").tolist()


# What a search hit says about its image (images_by_ids, all_image_hits).
_IMAGE_HIT_SELECT = """SELECT i.image_id, i.checkpoint, i.artist_id, ar.name, i.template, i.seed, i.thumb_path, i.path
           FROM images i LEFT JOIN artists ar USING (artist_id)"""


def images_by_ids(store: Reader, image_ids: list[int]) -> pd.DataFrame:
    if not image_ids:
        return pd.DataFrame(columns=["image_id", "checkpoint", "artist_id", "name", "template", "seed",
                                     "thumb_path", "path"])
    return store.df(
        f"{_IMAGE_HIT_SELECT} WHERE i.image_id IN (SELECT unnest(?))",
        (list(int(i) for i in image_ids),),
    )


def all_image_hits(store: Reader) -> pd.DataFrame:
    """``images_by_ids``' rows for every image, in no particular order (the server's in-memory
    copy sorts the ids itself: DuckDB's sort of 10M such rows needs more than a snapshot's 2 GB)."""
    return store.df(_IMAGE_HIT_SELECT)


def table_fingerprint(store: Reader, table: str, columns: tuple[str, ...] = ()) -> str:
    """"rows:sum of the rows' hashes" of one of the store's tables (of ``columns``, default all):
    equal when its content is."""
    if not all(re.fullmatch(r"[a-z_0-9]+", name) for name in (table, *columns)):
        raise InputError(f"table and columns must be plain names but are {table!r}, {columns!r}")
    hashed = ", ".join(columns) if columns else "t"
    return str(store.scalar(f"SELECT count(*) || ':' || coalesce(sum(hash({hashed})), 0) FROM {table} t"))


# ---------------------------------------------------------------- user SQL

@dataclass
class UserQueryResult:
    """A user query's rows; ``truncated_by`` says which limit cut them ("rows", "bytes" or "")."""

    frame: pd.DataFrame
    truncated: bool
    seconds: float
    row_limit: int
    truncated_by: str = ""
    byte_limit: int = SQL_BYTE_LIMIT
    nbytes: int = 0
    worker_pid: int = 0  # the child process that ran it: a fresh one for every query

    @property
    def note(self) -> str:
        """One line for a page or a terminal: rows, time and the limit that cut them, if any."""
        text = f"{len(self.frame):,} rows in {self.seconds:.2f} s"
        if self.truncated_by == "rows":
            text += f" — truncated at the row limit of {self.row_limit:,}"
        elif self.truncated_by == "bytes":
            text += f" — truncated at the size limit of {self.byte_limit / (1 << 20):g} MB"
        return text


def check_user_sql(sql: str) -> str:
    """The one statement of ``sql`` if the SQL page may run it, else UnsafeQueryError.

    Allowed: one SELECT (incl. WITH, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE, which
    DuckDB parses as SELECT) or an EXPLAIN of one. Everything else (CREATE, COPY, ATTACH,
    SET, PRAGMA, CALL, INSTALL/LOAD, EXPORT, transactions) is refused by name; file reads
    inside a SELECT are refused by the connection (external access disabled).
    """
    import duckdb

    text = (sql or "").strip()
    if not text:
        raise UnsafeQueryError("the query is empty")
    if len(text) > SQL_MAX_CHARS:
        raise UnsafeQueryError(f"the query is {len(text)} characters long; the limit is {SQL_MAX_CHARS}")
    parser = duckdb.connect(":memory:", config=READ_ONLY_CONFIG)
    try:
        try:
            statements = parser.extract_statements(text)
        except duckdb.Error as exc:
            raise UnsafeQueryError(f"the query does not parse: {exc}") from exc
        if len(statements) != 1:
            raise UnsafeQueryError(f"one statement at a time, please (got {len(statements)})")
        statement = statements[0]
        kind = statement.type.name
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs its statement: allow it only around a SELECT
            inner = re.sub(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?", "", statement.query, count=1, flags=re.I)
            inner_statements = parser.extract_statements(inner) if inner.strip() else []
            if len(inner_statements) != 1 or inner_statements[0].type.name != "SELECT":
                raise UnsafeQueryError("EXPLAIN is allowed only for a SELECT query")
        elif kind != "SELECT":
            raise UnsafeQueryError(
                f"only read-only queries (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) may run here; "
                f"this is a {kind} statement"
            )
        return statement.query
    finally:
        parser.close()


def run_user_sql(store: Reader, sql: str, row_limit: int = SQL_ROW_LIMIT,
                 time_limit: float = SQL_TIME_LIMIT, *, byte_limit: int = SQL_BYTE_LIMIT) -> UserQueryResult:
    """Run a user's query read-only under row, byte, time and memory limits (never cached).

    The query runs in a child process (``python -m evaluator.workspace.queries``), one at
    a time per process: DuckDB's ``memory_limit`` does not count a string a function
    builds (``repeat('x', 1e9)`` took 1 GB past a 1 GB limit), so the child also ends
    itself past ``SQL_RSS_LIMIT`` resident (``QueryLimitError``), which no limit inside
    this process could do. The child interrupts DuckDB at ``time_limit`` and exits a
    second later if the query ignores the interrupt; the parent kills it past that. It
    stops reading once ``row_limit`` rows or ``byte_limit`` bytes are in, so a huge result
    is never built, here or there. Signature as before; ``byte_limit`` is keyword-only.
    """
    if row_limit < 1:
        raise InputError(f"row_limit must be >= 1 but is {row_limit}")
    if time_limit <= 0:
        raise InputError(f"time_limit must be > 0 but is {time_limit}")
    if byte_limit < 1:
        raise InputError(f"byte_limit must be >= 1 but is {byte_limit}")
    query = check_user_sql(sql)
    if not store.path.is_file():
        raise FileNotFoundError(f"store {store.path} does not exist")
    job = {"path": str(store.path), "query": query, "row_limit": row_limit, "time_limit": time_limit,
           "byte_limit": byte_limit, "lock_timeout": store.lock_timeout}
    started = time.perf_counter()
    # One worker at a time per process: two visitors cannot double the memory ceiling.
    if not _WORKER_SLOT.acquire(timeout=time_limit):
        raise TimeoutError(f"another query held user SQL for the whole {time_limit:g} s limit; try again")
    try:
        header, payload = _run_worker(job, deadline=store.lock_timeout + time_limit + 5.0)
    finally:
        _SPARE.refill()
        _WORKER_SLOT.release()
    if "error" in header:
        _raise_worker_error(header, time_limit)
    import pyarrow as pa

    table = pa.ipc.open_stream(payload).read_all()
    return UserQueryResult(table.to_pandas(), bool(header["truncated_by"]), time.perf_counter() - started,
                           row_limit, truncated_by=header["truncated_by"], byte_limit=byte_limit,
                           nbytes=int(header["nbytes"]), worker_pid=int(header.get("pid", 0)))


class QueryLimitError(InputError):
    """A user query stopped for using more memory than user SQL may (``SQL_MEMORY_LIMIT``)."""


def _memory_message(detail: str) -> str:
    first = (detail.strip().splitlines() or ["no detail"])[0][:300]
    return (f"the query used more than the memory user SQL may ({SQL_MEMORY_LIMIT} in DuckDB, "
            f"{SQL_RSS_LIMIT / (1 << 30):g} GB for its process) and was stopped "
            f"(ask for fewer or smaller values, e.g. left(column, 1000)): {first}")


def _start_worker():
    """A new worker process; it imports what a query needs, then waits for its job on stdin."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "evaluator.workspace.queries"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class SpareWorker:
    """One worker started ahead of the next query, so a query does not wait for start-up.

    Starting Python with pandas, DuckDB and Arrow costs about a second here, nearly all of
    a small query's time on the SQL page. A long-lived reader (the dashboard, the server)
    calls ``keep_spare_worker()``; every query still runs in a process of its own, used
    once: the spare is taken and a new one started after the query. A spare that died is
    replaced, not used. One-shot callers (``atelier sql``) keep none: a spare they
    never use would only cost a start-up. Guarded by ``_WORKER_SLOT``.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._proc = None

    @property
    def pid(self) -> int:
        """The waiting spare's process id, 0 when there is none."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else 0

    def take(self):
        """The waiting spare if it is alive, else a new worker; either way this query's own."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is not None:
            proc.communicate()  # reap the dead spare
            proc = None
        return proc or _start_worker()

    def refill(self) -> None:
        if self.enabled and self._proc is None:
            self._proc = _start_worker()

    def close(self) -> None:
        """Stop keeping a spare; the waiting one reads end-of-input and exits."""
        self.enabled = False
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.communicate(b"", timeout=10)


_SPARE = SpareWorker()


def keep_spare_worker() -> SpareWorker:
    """Start keeping a spare SQL worker in this process (idempotent); it is stopped at exit."""
    import atexit

    if not _SPARE.enabled:
        _SPARE.enabled = True
        atexit.register(_SPARE.close)
    # Never wait behind a running query (a page render would hang for its time limit):
    # that query starts the spare when it ends.
    if _WORKER_SLOT.acquire(blocking=False):
        try:
            _SPARE.refill()
        finally:
            _WORKER_SLOT.release()
    return _SPARE


def _run_worker(job: dict, *, deadline: float) -> tuple[dict, bytes]:
    """(header, Arrow IPC bytes) from one run of the worker; a worker past ``deadline`` s is killed."""
    import json
    import subprocess

    proc = _SPARE.take()
    try:
        out, err = proc.communicate(json.dumps(job).encode("utf-8"), timeout=deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TimeoutError(f"the query ran longer than the {job['time_limit']:g} s limit and was killed") from None
    line, _, payload = out.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        # No header: the worker died before it could say why (an allocation past its
        # address-space cap can abort it outright).
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise QueryLimitError(_memory_message(tail[0])) from None
    return header, payload


def _raise_worker_error(header: dict, time_limit: float) -> None:
    """Raise in this process what the worker reported, as the same kind of error."""
    import duckdb

    from evaluator.workspace.store import StoreLockedError

    kind, message = header["error"], header["message"]
    if kind == "timeout":
        raise TimeoutError(f"the query ran longer than the {time_limit:g} s limit and was stopped")
    if kind == "memory":
        raise QueryLimitError(_memory_message(message))
    if kind == "permission":
        raise UnsafeQueryError(f"the SQL page cannot read files outside the store: {message}")
    if kind == "locked":
        raise StoreLockedError(message)
    if kind == "missing":
        raise FileNotFoundError(message)
    error = getattr(duckdb, header.get("class", ""), None)
    if not (isinstance(error, type) and issubclass(error, duckdb.Error)):
        error = duckdb.Error
    raise error(message)


def _fit_bytes(batch, budget: int):
    """The longest head of ``batch`` whose Arrow size fits ``budget`` bytes (bisection)."""
    low, high = 0, batch.num_rows
    while low < high:
        mid = (low + high + 1) // 2
        if batch.slice(0, mid).nbytes <= budget:
            low = mid
        else:
            high = mid - 1
    return batch.slice(0, low)


def _fetch_limited(con, job: dict) -> tuple[list, Any, str, int]:
    """(batches, schema, truncated_by, bytes): read Arrow batches until a row or byte limit."""
    reader = con.sql(job["query"]).to_arrow_reader(256)
    batches, rows, size, truncated_by = [], 0, 0, ""
    for batch in reader:
        if rows + batch.num_rows > job["row_limit"]:
            batch, truncated_by = batch.slice(0, job["row_limit"] - rows), "rows"
        if size + batch.nbytes > job["byte_limit"]:
            batch, truncated_by = _fit_bytes(batch, job["byte_limit"] - size), "bytes"
        batches.append(batch)
        rows, size = rows + batch.num_rows, size + batch.nbytes
        if truncated_by:
            break
    return batches, reader.schema, truncated_by, size


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, class name) of an error inside the worker, for the parent to raise again."""
    import duckdb

    from evaluator.workspace.store import StoreLockedError

    if isinstance(exc, duckdb.InterruptException):
        return "timeout", type(exc).__name__
    if isinstance(exc, (duckdb.OutOfMemoryException, MemoryError)) or "Out of Memory" in str(exc):
        return "memory", type(exc).__name__
    if isinstance(exc, duckdb.PermissionException):
        return "permission", type(exc).__name__
    if isinstance(exc, StoreLockedError):
        return "locked", type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return "missing", type(exc).__name__
    return "duckdb", type(exc).__name__


def _rss_bytes() -> int:
    """This process's resident set (Linux /proc; 0 where there is none)."""
    import os

    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _worker_main() -> None:
    """The child of ``run_user_sql``: cap this process, run the job from stdin, write the result.

    stdout: one JSON header line, then (on success) the result as an Arrow IPC stream.
    Three guards besides DuckDB's own limits: an address-space cap, a watchdog that ends
    the process once its resident memory passes ``SQL_RSS_LIMIT``, and a hard stop a
    second after the interrupt of ``time_limit``.
    """
    import json
    import os
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_AS, (SQL_ADDRESS_LIMIT, SQL_ADDRESS_LIMIT))
    import duckdb  # noqa: F401 - imported before the job arrives: a spare waits ready
    import pyarrow as pa

    raw = sys.stdin.buffer.read()
    if not raw.strip():
        os._exit(0)  # a spare that was never used: its parent closed our input
    job = json.loads(raw)
    out, lock, done = sys.stdout.buffer, threading.Lock(), threading.Event()

    def finish(data: bytes, status: int = 0) -> None:
        with lock:  # one writer of the header: the query, the watchdog or the hard stop
            out.write(data)
            out.flush()
            os._exit(status)  # no teardown: a query still unwinding cannot hold the exit

    def error(kind: str, message: str, name: str = "") -> bytes:
        return json.dumps({"error": kind, "class": name, "message": message}).encode("utf-8") + b"\n"

    def watch() -> None:
        while not done.wait(0.01):
            rss = _rss_bytes()
            if rss > SQL_RSS_LIMIT:
                finish(error("memory", f"the query process reached {rss / (1 << 30):.2f} GB resident"), 3)

    threading.Thread(target=watch, daemon=True).start()
    try:
        con = connect(job["path"], read_only=True, timeout=job["lock_timeout"], config=USER_SQL_CONFIG)
        threading.Timer(job["time_limit"], con.interrupt).start()
        hard_stop = threading.Timer(job["time_limit"] + 1.0, finish, (error("timeout", "killed"), 3))
        hard_stop.daemon = True
        hard_stop.start()
        batches, schema, truncated_by, size = _fetch_limited(con, job)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        header = json.dumps({"truncated_by": truncated_by, "nbytes": size, "pid": os.getpid()}).encode("utf-8")
        finish(header + b"\n" + sink.getvalue().to_pybytes())
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent by kind
        kind, name = _classify(exc)
        finish(error(kind, str(exc), name))


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells a spreadsheet would run as formulas get a leading apostrophe (CSV injection)."""
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if series.dtype == object or pd.api.types.is_string_dtype(series):
            out[column] = series.map(guard_formula)
    return out


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV with formula cells neutralized; every text cell quoted (a lone CR stays in its cell)."""
    import csv

    return neutralize_formulas(frame).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")


# ---------------------------------------------------------------- files

def image_file(workdir: str | Path, relpath: str | None) -> Path | None:
    """An image file of the workdir by its stored relative path, or None (missing, escaping)."""
    if not relpath or not isinstance(relpath, str):
        return None
    try:
        path = Workdir(Path(workdir).resolve()).resolve_inside(relpath)
    except ValueError:
        return None
    return path if path.is_file() else None


if __name__ == "__main__":
    _worker_main()


# ------------------------------------------------------------------ curation (issue 14)

# label -> the column a curated-images listing sorts by (NULLs last either way)
CURATION_SORTS: dict[str, str] = {
    "resolution": "c.megapixels", "aesthetic": "c.aesthetic", "watermark probability": "c.watermark_prob",
    "SD watermark agreement": "c.sd_mark_agreement", "path": "f.path",
}


@dataclass(frozen=True)
class CurationFilter:
    """Which curated files a listing shows, and in what order."""

    flags: tuple[str, ...] = ()  # files with any of these reason codes
    flagged: bool | None = None  # True: any flag; False: none; None: all
    artist_id: str = ""
    min_megapixels: float = 0.0
    sort: str = "resolution"
    descending: bool = True


def has_curation(store: Reader) -> bool:
    """Whether `atelier curate` recorded anything here (migration 5 makes the table empty)."""
    return bool(table_columns(store, "curation_files")) and bool(store.scalar("SELECT count(*) FROM curation_files"))


def curated_files(store: Reader, filt: CurationFilter, *, limit: int, offset: int = 0) -> tuple[pd.DataFrame, int]:
    """One page of curated files with their signals (thumb_path for stored images), and the total."""
    if filt.sort not in CURATION_SORTS:
        raise InputError(f"sort must be one of {', '.join(CURATION_SORTS)} but is {filt.sort!r}")
    where, params = ["c.megapixels IS NULL OR c.megapixels >= ?"], [float(filt.min_megapixels)]
    if filt.flags:
        where.append("list_has_any(f.flags, ?)")
        params.append(list(filt.flags))
    if filt.flagged is not None:
        where.append("len(f.flags) > 0" if filt.flagged else "len(f.flags) = 0")
    if filt.artist_id:
        where.append("f.artist_id = ?")
        params.append(filt.artist_id)
    order = f"{CURATION_SORTS[filt.sort]} {'DESC' if filt.descending else 'ASC'} NULLS LAST, f.path"
    frame = store.df(
        f"""SELECT f.source, f.path, f.flags, f.artist_id, c.width, c.height, c.megapixels, c.aesthetic,
                   c.watermark_prob, c.sd_mark, c.sd_mark_agreement, c.outlier_z, f.duplicate_of_path,
                   c.duplicate_of, c.error, i.thumb_path, count(*) OVER () AS total
            FROM curation_files f JOIN curation c USING (sha256) LEFT JOIN images i ON i.image_id = f.image_id
            WHERE {' AND '.join(f'({w})' for w in where)}
            ORDER BY {order} LIMIT ? OFFSET ?""",
        [*params, int(limit), int(offset)],
    )
    total = int(frame["total"].iloc[0]) if not frame.empty else 0
    return frame.drop(columns=["total"]), total
