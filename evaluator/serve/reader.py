"""A request's read-only view of the store: a cursor of the server's snapshot, or its own connection.

``SnapshotReader`` (the default) reads the server's copy of the store through a cursor of
the copy's one connection (``evaluator.serve.snapshot``): no open per request, a warm
cache, and a writer never waits for the server. ``DirectReader`` (``--no-snapshot``)
opens DIR/atelier.duckdb read-only on first use and closes it when the request ends, so
`atelier score` gets the file between requests; a request that finds the store locked
waits ``lock_wait`` seconds (``store.connect`` retries), then the API answers 503 with
Retry-After. Both register each query with the request's deadline (``deadline.watch``),
which interrupts it when the time is up. Writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluator.serve import deadline
from evaluator.serve.errors import ApiError
from evaluator.serve.snapshot import Snapshot, StoreSnapshots, work_slot
from evaluator.workspace.store import StoreLockedError, connect_read_only


class _Reader:
    """``Reader`` of ``evaluator.workspace.queries`` for one request (a context manager)."""

    lock_timeout: float

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        raise NotImplementedError

    def connection(self):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """A lookup whose answer cannot change while this view lives (names, summaries)."""
        return self.recall(key, compute)[0]

    def recall(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(the answer, whether it was remembered): here never; a snapshot remembers."""
        with work_slot():
            return compute(), False

    def read_model(self):
        """The snapshot's ``readmodel.ReadModel`` (None: not built yet, or no snapshot)."""
        return None

    def _execute(self, sql: str, params: tuple | list):
        import duckdb

        con = self.connection()
        watcher = deadline.current()
        if watcher is not None:
            watcher.watch(con)
        try:
            return con.execute(sql, list(params))
        except (duckdb.BinderException, duckdb.CatalogException) as exc:
            behind = schema_behind(con, exc)
            if behind is None:
                raise
            raise behind from exc
        finally:
            if watcher is not None:
                watcher.unwatch(con)

    def df(self, sql: str, params: tuple | list = ()):
        return self._execute(sql, params).df()

    def scalar(self, sql: str, params: tuple | list = ()) -> Any:
        rows = self._execute(sql, params).fetchall()  # all: DuckDB refuses new work beside an open result
        return rows[0][0] if rows else None


class SnapshotReader(_Reader):
    """A request's cursor of the server's current snapshot (acquired on first use)."""

    def __init__(self, snapshots: StoreSnapshots) -> None:
        self.snapshots = snapshots
        self.lock_timeout = snapshots.lock_wait
        self._snapshot: Snapshot | None = None
        self._cursor = None

    def _acquire(self) -> Snapshot:
        if self._snapshot is None:
            if not self.snapshots.store.is_file():
                raise missing_store(self.snapshots.store)
            try:
                snapshot = self.snapshots.acquire()
            except StoreLockedError as exc:
                raise busy(self.snapshots.lock_wait) from exc
            self._snapshot = snapshot
        return self._snapshot

    @property
    def path(self) -> Path:
        """The snapshot's file (user SQL's child process opens it read-only)."""
        return self._acquire().path

    def connection(self):
        if self._cursor is None:  # only a request that queries pays for a cursor
            self._cursor = self._acquire().con.cursor()
        return self._cursor

    def recall(self, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        return self._acquire().recall(key, compute)

    def read_model(self):
        return self._acquire().model

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        """From the read model's lookups when it has ``key`` (names every request checks: kept
        with the model, not among the pages a busy server forgets), else the snapshot's memo."""
        model = self._acquire().model
        if model is not None and key in model.lookups:
            return model.lookups[key]
        return self.recall(key, compute)[0]

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self._snapshot is not None:
            self.snapshots.release(self._snapshot)
            self._snapshot = None


class PinnedReader(_Reader):
    """A reader of one given snapshot (the read model's build): its own cursor, no deadline."""

    def __init__(self, snapshot: Snapshot, lock_timeout: float = 0.0) -> None:
        self.snapshot = snapshot
        self.lock_timeout = lock_timeout
        self._cursor = None
        self.lookups: dict[str, Any] = {}  # what ``remember`` computed (the read model keeps it)

    def remember(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.lookups:
            self.lookups[key] = compute()
        return self.lookups[key]

    @property
    def path(self) -> Path:
        return self.snapshot.path

    def connection(self):
        if self._cursor is None:
            self._cursor = self.snapshot.con.cursor()
        return self._cursor

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class DirectReader(_Reader):
    """A request's own read-only connection to the store (opened on first use, closed after)."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        self._path = path
        self.lock_timeout = lock_timeout
        self._con = None

    @property
    def path(self) -> Path:
        return self._path

    def connection(self):
        if self._con is None:
            if not self._path.is_file():
                raise missing_store(self._path)
            try:
                self._con = connect_read_only(self._path, timeout=self.lock_timeout)
            except StoreLockedError as exc:
                raise busy(self.lock_timeout) from exc
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def schema_behind(con, exc: Exception) -> ApiError | None:
    """A 503 saying to migrate, when a query failed on a store older than this atelier (else None)."""
    from evaluator.workspace.store import SCHEMA_VERSION, schema_version

    version = schema_version(con)
    if version >= SCHEMA_VERSION:
        return None
    return ApiError(f"the store's schema is version {version} but this atelier reads version {SCHEMA_VERSION}: "
                    f"run `atelier migrate --workdir DIR` ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                    status=503)


def missing_store(path: Path) -> ApiError:
    return ApiError(f"the store {path.name} does not exist in the workdir (yet); run `atelier score` first",
                    status=503, headers={"Retry-After": "30"})


def busy(waited: float) -> ApiError:
    """The 503 of a store a writer held for longer than the request could wait."""
    return ApiError(f"the store is being written by another process (waited {waited:g} s); retry shortly",
                    status=503, headers={"Retry-After": str(max(1, math.ceil(waited)))})
