"""A digest of a store's content: one hash a table, blind to what differs run to run.

Reads a store read-only; writes nothing. Two runs of the same pipeline on the same inputs
give the same digest, so a refactor can show it changed no stored row or value:

    python -m evaluator.testing.store_digest before/atelier.duckdb > before.txt
    python -m evaluator.testing.store_digest after/atelier.duckdb | diff before.txt -

Left out, because they differ between two identical runs: run ids, clocks and timings,
host and versions, fingerprints that embed paths, and the workdir's own path (replaced
by ``<WD>`` wherever a value contains it). Floats are rounded to 6 decimals.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

VOLATILE_COLUMNS = frozenset({
    "run_id", "timings", "fingerprint", "message", "started_at", "finished_at", "created_at", "updated_at",
    "added_at", "applied_at", "seconds", "host", "git_rev", "versions", "config",
})


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    digest: str
    left_out: tuple[str, ...]

    def line(self) -> str:
        return f"{self.table} {self.rows} {self.digest} {list(self.left_out)}"


def _cell(value: object, root: str) -> object:
    if isinstance(value, float):
        return round(value, 6)
    return str(value).replace(root, "<WD>")


def store_digest(store: str | Path) -> list[TableDigest]:
    """One ``TableDigest`` per table of ``store``, sorted by table name."""
    from evaluator.workspace.store import connect_read_only

    root = str(Path(store).resolve().parent)
    con = connect_read_only(store)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        out = []
        for table in tables:
            columns = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall()]
            kept = [c for c in columns if c not in VOLATILE_COLUMNS]
            quoted = ", ".join(f'"{c}"' for c in kept) or "1"
            rows = sorted(json.dumps([_cell(v, root) for v in row]) for row in con.execute(f'SELECT {quoted} FROM "{table}"').fetchall())
            digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
            out.append(TableDigest(table, len(rows), digest, tuple(c for c in columns if c not in kept)))
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m evaluator.testing.store_digest DIR/atelier.duckdb", file=sys.stderr)
        return 2
    for table in store_digest(args[0]):
        print(table.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
