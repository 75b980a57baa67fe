"""Helpers shared by the dashboard and report tests: the bench store builder, raw reads."""

from __future__ import annotations

from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[2]


def make_store_module():
    """The synthetic store builder (``evaluator.testing.synthetic_store``)."""
    from evaluator.testing import synthetic_store

    return synthetic_store


def build_store(workdir: str | Path, **spec) -> Path:
    """A filled store (and image files) built by the same code as the 1M-image bench store."""
    make = make_store_module()
    return make.build_store(workdir, make.SyntheticStoreSpec(**spec))


def raw(workdir: Path, sql: str, params=()):
    """Rows of a query on the workdir's store, read-only, bypassing dashboard.queries."""
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()
