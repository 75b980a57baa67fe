"""A request's read-only view of the store: one connection, opened on first use, closed after.

Reads DIR/atelier.duckdb through ``store.connect_read_only`` (``READ_ONLY_CONFIG``: no file
beyond the store); writes nothing. DuckDB lets no process open the file while a writer
holds it, and a writer cannot open it while any reader does, so the server never keeps
a connection between requests: ``atelier score`` gets the file between them. A request
that finds the store locked waits ``lock_wait`` seconds (``store.connect`` retries), then
the API answers 503 with Retry-After.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evaluator.serve.errors import ApiError
from evaluator.workspace.store import StoreLockedError, connect_read_only


class RequestReader:
    """``Reader`` of ``evaluator.workspace.queries`` for one request (a context manager)."""

    def __init__(self, path: Path, lock_timeout: float) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._con = None

    def __enter__(self) -> RequestReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self):
        if self._con is None:
            if not self.path.is_file():
                raise ApiError(f"the store {self.path.name} does not exist in the workdir (yet); "
                               "run `atelier score` first", status=503, headers={"Retry-After": "30"})
            try:
                self._con = connect_read_only(self.path, timeout=self.lock_timeout)
            except StoreLockedError as exc:
                raise busy(self.lock_timeout) from exc
        return self._con

    def df(self, sql: str, params: tuple | list = ()):
        return self.connection().execute(sql, list(params)).df()

    def scalar(self, sql: str, params: tuple | list = ()) -> Any:
        row = self.connection().execute(sql, list(params)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def busy(waited: float) -> ApiError:
    """The 503 of a store a writer held for longer than the request could wait."""
    return ApiError(f"the store is being written by another process (waited {waited:g} s); retry shortly",
                    status=503, headers={"Retry-After": str(max(1, math.ceil(waited)))})
