"""The server's read model: the hot tables of one snapshot, in memory, as pre-encoded JSON rows.

A cold question to DuckDB costs 10-100 ms at 1M images (an image-id lookup scans the
table: DuckDB does not use the key for it), and 50 clients on 2 cores need a request to
cost about a millisecond. So when a snapshot is taken, the server reads the tables its
busiest endpoints page through, with the same query functions the dashboard runs
(``evaluator.workspace.queries``: one place for each statement), encodes every row once
as JSON (``records_json``'s options) and keeps the bytes with the rows' offsets:

- /comparisons: ``comparison_table`` of each (base, finetune, model, metric), in the API's
  default order (other orders on first use), with each row's verdict;
- /scores: every ``artist_scores`` row in key order, and each filter value's row positions;
- /search: every image's ``images_by_ids`` row, by image id (sorted ids, ``searchsorted``).

A page is then a lookup and a slice of bytes. A part whose tables did not change since the
previous snapshot (``queries.table_fingerprint``) is taken over, not rebuilt: a writer
committing to one table does not make the server reread the others. Reads the snapshot;
writes nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.workspace import queries

ALL_ROWS = 1 << 62  # LIMIT of a whole table read through a paged query function
# Comparison tables kept per model in orders other than the default (each ~9,000 rows for
# a 9,000-artist catalog, ~3 MB): the orders a team sorts by, without growing unbounded.
EXTRA_ORDERS = 64
DEFAULT_ORDER = ("delta", False)  # /comparisons' own default: order=delta, ascending


class RelationReader:
    """A ``queries.Reader`` whose ``df`` gives the statement's DuckDB relation, not yet run: the
    query functions' own SQL, with the rows then encoded by DuckDB (``encode``), not pandas
    (pandas' to_json took 65 s for the 1M image rows here; DuckDB 12 s on the same busy cores)."""

    def __init__(self, con, path: Path, lock_timeout: float = 0.0) -> None:
        self.con = con
        self.path = path
        self.lock_timeout = lock_timeout

    def __enter__(self) -> RelationReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()  # its own cursor (``relations``)

    def df(self, sql: str, params: tuple | list = ()):
        return self.con.sql(sql, params=list(params)) if params else self.con.sql(sql)

    def scalar(self, sql: str, params: tuple | list = ()) -> Any:
        rows = self.con.execute(sql, list(params)).fetchall()  # all: DuckDB refuses new work beside an open result
        return rows[0][0] if rows else None


def _json_value(name: str, kind: str) -> str:
    """One field of a row's JSON object: a NaN or infinite number as null (JSON has neither)."""
    column = 'q."' + name.replace('"', '""') + '"'
    if kind in ("DOUBLE", "FLOAT"):
        return f"CASE WHEN isfinite({column}) THEN {column} END"
    return column


@dataclass(frozen=True)
class Rows:
    """Rows encoded as JSON objects, each followed by ',' in ``buf``; row i is ``buf[starts[i]:ends[i]]``."""

    buf: bytes | bytearray  # a bytearray when encoded (never written after); every accessor returns bytes
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def nbytes(self) -> int:
        return len(self.buf) + self.starts.nbytes + self.ends.nbytes

    def span(self, start: int, stop: int) -> bytes:
        """Rows ``start:stop`` as a JSON array (one slice: they lie next to each other)."""
        stop = min(stop, len(self))
        if start >= stop:
            return b"[]"
        return b"[" + self.buf[self.starts[start]:self.ends[stop - 1]] + b"]"

    def take(self, positions) -> bytes:
        """The rows at ``positions`` as a JSON array."""
        buf = self.buf
        starts, ends = self.starts[positions].tolist(), self.ends[positions].tolist()  # ints, not numpy scalars
        return b"[" + b",".join([buf[a:z] for a, z in zip(starts, ends, strict=True)]) + b"]"

    def row(self, position: int) -> bytes:
        return bytes(self.buf[self.starts[position]:self.ends[position]])


# Rows DuckDB hands over at a time: the encoded rows are copied out batch by batch, so a
# 10M-row part peaks at its own bytes plus one batch, not twice its size (one arrow table
# of every row, then its copy).
ENCODE_BATCH_ROWS = 262_144


def encode(relation, keys: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> tuple[Rows, dict[str, Any]]:
    """(the relation's rows as JSON objects in its order, without ``drop``; the ``keys`` columns as arrow arrays).

    The same encoding serves the read model and a page queried directly, so both answer
    the same bytes: column order kept, NULL, NaN and infinities as null, shortest round-trip floats.
    """
    import pyarrow as pa

    fields = ", ".join("'" + name.replace("'", "''") + "': " + _json_value(name, str(kind))
                       for name, kind in zip(relation.columns, relation.types, strict=True) if name not in drop)
    extra = "".join(f', q."{key}" AS "key_{key}"' for key in keys)
    query = relation.query("q", f"SELECT to_json({{{fields}}}) || ',' AS row_json{extra} FROM q")
    buf = bytearray()  # grown in place (realloc), never copied whole: a frozen copy would double the peak
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    key_chunks: dict[str, list] = {key: [] for key in keys}
    reader = query.to_arrow_reader(batch_size=ENCODE_BATCH_ROWS)
    for batch in reader:
        if batch.num_rows == 0:
            continue
        column = batch.column(0).cast(pa.large_string())
        bounds = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset:column.offset + len(column) + 1]
        size = len(buf)
        buf += memoryview(column.buffers()[2])[bounds[0]:bounds[-1]]
        starts.append(bounds[:-1] - bounds[0] + size)
        ends.append(bounds[1:] - bounds[0] - 1 + size)  # each row without its ','
        for key in keys:
            key_chunks[key].append(batch.column(f"key_{key}"))
    empty = np.zeros(0, np.int64)
    rows = Rows(buf, np.concatenate(starts) if starts else empty, np.concatenate(ends) if ends else empty)
    return rows, {key: pa.chunked_array(key_chunks[key], type=reader.schema.field(f"key_{key}").type).combine_chunks()
                  for key in keys}


def page_json(relation, limit: int) -> tuple[bytes, bool]:
    """A page queried directly (``limit + 1`` rows asked for): its first ``limit`` rows, and whether more follow."""
    rows, _ = encode(relation)
    return rows.span(0, limit), len(rows) > limit


def _positions_by(values) -> dict[Any, np.ndarray]:
    """Each value of an arrow column -> the (ascending) positions of its rows; nulls left out."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(values)
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes[codes >= 0], minlength=len(encoded.dictionary))
    skip = int((codes < 0).sum())  # the nulls sort first (code -1)
    groups = np.split(order[skip:], np.cumsum(counts)[:-1]) if len(counts) else []
    return dict(zip(encoded.dictionary.to_pylist(), groups, strict=True))


@dataclass(frozen=True)
class ComparisonGroup:
    """One (base, finetune, model, metric) comparison table in one order."""

    rows: Rows
    by_verdict: dict[Any, np.ndarray]

    @classmethod
    def read(cls, store, key: tuple) -> ComparisonGroup:
        base, finetune, model, metric, order, descending = key
        with _as_relations(store) as source:
            relation = queries.comparison_table(source, base, finetune, model, metric, order=order,
                                                descending=descending, limit=ALL_ROWS, offset=0)
            rows, keys = encode(relation, keys=("verdict",))
        return cls(rows, _positions_by(keys["verdict"]))

    def page(self, verdict: str, limit: int, offset: int) -> tuple[bytes, bool]:
        """(rows offset..offset+limit as JSON, whether more follow): ``WHERE c.verdict = ?`` keeps order."""
        if not verdict:
            return self.rows.span(offset, offset + limit), offset + limit < len(self.rows)
        kept = self.by_verdict.get(verdict, np.zeros(0, np.int64))
        return self.rows.take(kept[offset:offset + limit]), offset + limit < len(kept)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + sum(v.nbytes for v in self.by_verdict.values())


@dataclass(frozen=True)
class ScoreTable:
    """Every ``artist_scores`` row in the query's key order, and the positions of each filter value."""

    rows: Rows
    index: dict[str, dict[str, np.ndarray]]

    COLUMNS = ("model", "checkpoint", "artist_id", "metric")

    @classmethod
    def read(cls, store) -> ScoreTable:
        with _as_relations(store) as source:
            relation = queries.artist_scores(source, queries.ScoreFilter(), limit=ALL_ROWS, offset=0)
            rows, keys = encode(relation, keys=cls.COLUMNS)
        return cls(rows, {column: _positions_by(keys[column]) for column in cls.COLUMNS})

    def page(self, filt: queries.ScoreFilter, limit: int, offset: int) -> tuple[bytes, bool]:
        """The page ``artist_scores(store, filt, limit, offset)`` returns, as JSON, and whether more follow."""
        kept = None
        for column in self.COLUMNS:
            value = getattr(filt, column)
            if value:
                rows = self.index[column].get(value, np.zeros(0, np.int64))
                kept = rows if kept is None else np.intersect1d(kept, rows, assume_unique=True)
        if kept is None:
            return self.rows.span(offset, offset + limit), offset + limit < len(self.rows)
        return self.rows.take(kept[offset:offset + limit]), offset + limit < len(kept)

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + sum(a.nbytes for d in self.index.values() for a in d.values())


@dataclass(frozen=True)
class ImageHits:
    """Every image's search-hit row (``images_by_ids``' columns but its id), found by image id.

    ``ids`` are sorted and ``positions[i]`` is the row of ``ids[i]``: the rows stay in the
    order DuckDB read them, because sorting them there ran out of the snapshot's memory
    at 10M images, while sorting the ids here takes ~2 s.
    """

    ids: np.ndarray
    positions: np.ndarray
    rows: Rows

    @classmethod
    def read(cls, store) -> ImageHits:
        with _as_relations(store) as source:
            rows, keys = encode(queries.all_image_hits(source), keys=("image_id",), drop=("image_id",))
        ids = keys["image_id"].to_numpy().astype(np.int64)
        positions = np.argsort(ids, kind="stable")
        return cls(ids[positions], positions, rows)

    def fields(self, image_ids: list[int]) -> list[bytes | None]:
        """Each image's row as the inside of a JSON object (``"checkpoint":...,"path":...``), None if unknown."""
        wanted = np.asarray(image_ids, dtype=np.int64)
        at = np.searchsorted(self.ids, wanted)
        out: list[bytes | None] = []
        for image_id, pos in zip(wanted, at, strict=True):
            found = pos < len(self.ids) and self.ids[pos] == image_id
            out.append(self.rows.row(int(self.positions[pos]))[1:-1] if found else None)
        return out

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.positions.nbytes + self.rows.nbytes


# Which tables each part reads: a part is taken over from the previous snapshot when they
# are unchanged.
PART_TABLES = {"comparisons": ("comparisons", "artists"), "scores": ("artist_scores", "artists"),
               "images": ("images", "artists")}


@dataclass
class ReadModel:
    """One snapshot's parts (built by ``build``); requests only read it."""

    fingerprints: dict[str, Any]
    comparisons: dict[tuple, ComparisonGroup]
    scores: ScoreTable | None
    images: ImageHits | None
    seconds: float = 0.0
    reused: tuple[str, ...] = ()
    # names and summaries every request checks (``app.warm_lookups``), by their memo keys
    lookups: dict[str, Any] = field(default_factory=dict)
    extra: OrderedDict = field(default_factory=OrderedDict)  # other orders, least recently used first
    extra_lock: threading.Lock = field(default_factory=threading.Lock)

    def comparison_group(self, store, base: str, finetune: str, model: str, metric: str, order: str,
                         descending: bool) -> ComparisonGroup:
        """The group in that order: prebuilt for the default order, else read once (raises on a bad order)."""
        if (order, descending) == DEFAULT_ORDER and (base, finetune, model, metric) in self.comparisons:
            return self.comparisons[(base, finetune, model, metric)]
        key = (base, finetune, model, metric, order, descending)
        with self.extra_lock:
            if key in self.extra:
                self.extra.move_to_end(key)
                return self.extra[key]
        group = ComparisonGroup.read(store, key)
        with self.extra_lock:
            self.extra[key] = group
            while len(self.extra) > EXTRA_ORDERS:
                self.extra.popitem(last=False)
        return group

    def status(self) -> dict:
        """What /health says: rows and bytes per part, how long the build took, what was taken over."""
        comparison_bytes = sum(g.nbytes for g in self.comparisons.values())
        with self.extra_lock:
            comparison_bytes += sum(g.nbytes for g in self.extra.values())
        parts = {"comparison_groups": len(self.comparisons),
                 "comparison_rows": sum(len(g.rows) for g in self.comparisons.values()),
                 "score_rows": len(self.scores.rows) if self.scores else 0,
                 "image_rows": len(self.images.ids) if self.images else 0}
        total = comparison_bytes + (self.scores.nbytes if self.scores else 0) + (self.images.nbytes if self.images else 0)
        return {**parts, "memory_mb": round(total / 2**20, 1), "build_seconds": round(self.seconds, 2),
                "reused": list(self.reused)}


def relations(store) -> RelationReader:
    """A ``RelationReader`` on a cursor of its own of ``store``'s connection (a result the reader
    left open would block relations); closing it (``with``) closes that cursor."""
    return RelationReader(store.connection().cursor(), store.path, store.lock_timeout)


# The columns hashed per table (default: all): of the 1M image rows, only what a hit shows
# (hashing every column took 4 s on busy cores, these 0.4 s).
FINGERPRINT_COLUMNS = {"images": ("image_id", "checkpoint", "artist_id", "template", "seed", "thumb_path", "path")}


@contextlib.contextmanager
def _as_relations(store):
    """``store`` if it gives relations already (the build's), else a ``RelationReader`` of it, closed after."""
    if isinstance(store, RelationReader):
        yield store
        return
    with relations(store) as source:
        yield source


def fingerprints(store) -> dict[str, Any]:
    tables = sorted({t for names in PART_TABLES.values() for t in names})
    return {table: queries.table_fingerprint(store, table, FINGERPRINT_COLUMNS.get(table, ())) for table in tables}


def build(store, previous: ReadModel | None = None) -> ReadModel:
    """The read model of the snapshot ``store`` reads, taking over ``previous``' unchanged parts.

    1. fingerprint the tables the parts read;
    2. per part: the previous one if its tables are unchanged, else read it again (the
       comparison groups: one per ``comparison_pairs`` row, in the default order).
    """
    started = time.monotonic()
    prints = fingerprints(store)

    def unchanged(part: str) -> bool:
        return previous is not None and all(previous.fingerprints.get(t) == prints[t] for t in PART_TABLES[part])

    reused = tuple(part for part in PART_TABLES if unchanged(part))
    groups = [] if "comparisons" in reused else list(
        queries.comparison_pairs(store)[["base", "finetune", "model", "metric"]].itertuples(index=False, name=None))
    with relations(store) as source:
        comparisons = previous.comparisons if "comparisons" in reused else {
            key: ComparisonGroup.read(source, (*key, *DEFAULT_ORDER)) for key in groups}
        scores = previous.scores if "scores" in reused else ScoreTable.read(source)
        images = previous.images if "images" in reused else ImageHits.read(source)
    return ReadModel(prints, comparisons, scores, images, seconds=time.monotonic() - started, reused=reused)
