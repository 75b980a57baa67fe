"""The SQL that more than one reader of the store runs: the dashboard and `atelier serve`.

Reads DIR/atelier.duckdb through a ``Reader`` (anything with ``df(sql, params)``,
``scalar(sql, params)``, ``path`` and ``lock_timeout``): the dashboard's cached ``Store``
or the server's per-request reader. Writes nothing. Each statement lives here once; the
dashboard's ``queries`` module re-exports these names, so its pages and tests keep them.

The SQL page's guard (``check_user_sql`` / ``run_user_sql``) is here too: one statement,
SELECT only, on a ``READ_ONLY_CONFIG`` connection (no file beyond the store), with a row
limit and a time limit. pandas and duckdb only; never torch.
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
from evaluator.workspace.store import READ_ONLY_CONFIG, connect_read_only
from evaluator.workspace.workdir import Workdir

# Limits of a user's SQL: 10,000 rows is more than a person reads and keeps a page or a
# response light; 10 s stops a runaway cross join long before it eats the machine.
SQL_ROW_LIMIT = 10_000
SQL_TIME_LIMIT = 10.0
SQL_MAX_CHARS = 20_000


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

    def where(self, alias: str = "ar") -> tuple[str, list]:
        clauses, params = ["TRUE"], []
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
        """SELECT checkpoint, metric, value, ci_low, ci_high, n, n_pos, n_neg, reason FROM checkpoint_scores
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
                     descending: bool = True, limit: int = 100, offset: int = 0) -> pd.DataFrame:
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
    direction = "DESC" if descending else "ASC"
    return store.df(
        f"""SELECT ar.name, c.artist_id, c.base_value, c.finetune_value, c.delta, c.ci_low, c.ci_high,
                   c.n, c.verdict, ar.movements, ar.mediums, ar.tags, ar.recognized_sdxl, ar.recognized_sd1
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


def artists_page(store: Reader, filt: ArtistFilter, *, limit: int, offset: int) -> pd.DataFrame:
    """One page of the catalog's artists (every column), by name; ``filt.name`` searches."""
    where, params = filt.where("ar")
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
                   s.n, s.n_seeds
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


def images_by_ids(store: Reader, image_ids: list[int]) -> pd.DataFrame:
    if not image_ids:
        return pd.DataFrame(columns=["image_id", "checkpoint", "artist_id", "name", "template", "seed",
                                     "thumb_path", "path"])
    return store.df(
        """SELECT i.image_id, i.checkpoint, i.artist_id, ar.name, i.template, i.seed, i.thumb_path, i.path
           FROM images i LEFT JOIN artists ar USING (artist_id) WHERE i.image_id IN (SELECT unnest(?))""",
        (list(int(i) for i in image_ids),),
    )


# ---------------------------------------------------------------- user SQL

@dataclass
class UserQueryResult:
    frame: pd.DataFrame
    truncated: bool
    seconds: float
    row_limit: int


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
                 time_limit: float = SQL_TIME_LIMIT) -> UserQueryResult:
    """Run a user's query read-only with a row limit and a time limit (never cached).

    The time limit interrupts the connection from a timer thread; the row limit stops
    reading Arrow batches once ``row_limit`` rows are in, so a huge result is never built.
    """
    import duckdb

    if row_limit < 1:
        raise InputError(f"row_limit must be >= 1 but is {row_limit}")
    if time_limit <= 0:
        raise InputError(f"time_limit must be > 0 but is {time_limit}")
    query = check_user_sql(sql)
    if not store.path.is_file():
        raise FileNotFoundError(f"store {store.path} does not exist")
    con = connect_read_only(store.path, timeout=store.lock_timeout)
    timer = threading.Timer(time_limit, con.interrupt)
    started = time.perf_counter()
    timer.start()
    try:
        try:
            relation = con.sql(query)
            if relation is None:
                raise UnsafeQueryError("the statement returned no result")
            reader = relation.to_arrow_reader(2048)
            batches, rows = [], 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > row_limit:
                    break
        except duckdb.InterruptException as exc:
            raise TimeoutError(f"the query ran longer than the {time_limit:g} s limit and was stopped") from exc
        except duckdb.PermissionException as exc:
            raise UnsafeQueryError(f"the SQL page cannot read files outside the store: {exc}") from exc
        import pyarrow as pa

        table = pa.Table.from_batches(batches, schema=reader.schema) if batches else reader.schema.empty_table()
        truncated = table.num_rows > row_limit
        frame = table.slice(0, row_limit).to_pandas()
    finally:
        timer.cancel()
        con.close()
    return UserQueryResult(frame, truncated, time.perf_counter() - started, row_limit)


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
