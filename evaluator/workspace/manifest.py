"""Manifest shards: what each generation or import process made, one Parquet file a part.

Generation runs on many processes and machines, and DuckDB has a single writer, so
workers never touch the store: each writes its own shards under
``DIR/manifests/<run_id>/rank<R>-part<K>.parquet`` (atomically, a part every few
batches), and one ingest step (``ingest_manifests``, called by ``atelier score`` and
``atelier import``) copies them into the store's ``images`` table.

A unit can appear in several shards (failed in one run, retried in the next); the
latest record wins. The columns are those of the ``images`` table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.errors import InputError
from evaluator.workspace.records import IMAGE_COLUMNS

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

# The manifest shard schema is the images table's (name -> Arrow type name): one
# definition, in records.py.
MANIFEST_COLUMNS: dict[str, str] = IMAGE_COLUMNS


# A path that is absolute (POSIX, UNC or a drive letter) or steps out with a ``..`` part.
OUTSIDE_PATH = re.compile(r"^[/\\]|^[A-Za-z]:|(?:^|[/\\])\.\.(?:[/\\]|$)")
PATH_COLUMNS = ("path", "thumb_path")


def manifest_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in MANIFEST_COLUMNS.items()])


def write_shard(records: list[dict], path: str | Path) -> None:
    """Write one shard atomically; missing optional fields become nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    schema = manifest_schema()
    columns = {name: [record.get(name) for record in records] for name in schema.names}
    table = pa.table(columns, schema=schema)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:  # arrow's message does not say which file (disk full, permissions)
        raise OSError(exc.errno, f"cannot write manifest shard {path}: {exc}") from exc


def shard_paths(manifests_dir: str | Path) -> list[Path]:
    root = Path(manifests_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def read_manifests(manifests_dir: str | Path) -> pd.DataFrame:
    """All shards, latest record per image id (by ``created_at``), as a DataFrame."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = shard_paths(manifests_dir)
    if not paths:
        return manifest_schema().empty_table().to_pandas()
    frames = []
    for path in paths:
        try:
            frame = _seeds_exact(pq.read_table(path, schema=manifest_schema()))
        except Exception as exc:  # a shard is written atomically, so this is real damage
            raise InputError(f"manifest shard {path} is unreadable: {exc}") from exc
        _check_paths_inside(frame, path)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["created_at", "image_id"], kind="stable")
    return frame.drop_duplicates("image_id", keep="last").reset_index(drop=True)


def _seeds_exact(table: pa.Table) -> pd.DataFrame:
    """The shard as a DataFrame with its seeds exact: a ``seed`` column with NULLs (a seed
    above int64) stays integer (pandas would make it float64 and round every seed past
    2**53), and a shard written before ``seed_text`` existed gets it from ``seed``."""
    import pandas as pd

    frame = table.to_pandas()
    if table.column("seed").null_count:
        frame["seed"] = table.column("seed").to_pandas(types_mapper={table.schema.field("seed").type: pd.Int64Dtype()}.get)
    old = (frame["seed_text"].isna() & (frame["seed"].fillna(-1) >= 0)).to_numpy(dtype=bool)
    if old.any():
        frame.loc[old, "seed_text"] = frame.loc[old, "seed"].astype("int64").astype(str)
    return frame


def _check_paths_inside(frame: pd.DataFrame, shard: Path) -> None:
    """Refuse a shard whose image paths leave the workdir (absolute, or with ``..``).

    Every stage writes paths relative to the workdir; anything else is a tampered or
    foreign shard, and embedding or serving it would read files outside the workdir.
    """
    for column in PATH_COLUMNS:
        values = frame[column].dropna().astype(str)
        bad = values[values.str.contains(OUTSIDE_PATH.pattern)]
        if len(bad):
            row = int(bad.index[0])
            raise InputError(
                f"manifest shard {shard}: row {row} (image_id {frame.at[row, 'image_id']}): {column} {bad.iloc[0]!r} "
                f"is outside the workdir; paths must be relative to the workdir ({len(bad)} such rows)"
            )


def ingest_manifests(con: duckdb.DuckDBPyConnection, manifests_dir: str | Path) -> int:
    """Copy the latest manifest records into ``images`` (upsert by image id).

    Runs inside the caller's transaction. Returns the number of rows written.
    """
    from evaluator.workspace.store import upsert_df

    frame = read_manifests(manifests_dir)
    return upsert_df(con, "images", frame, key=["image_id"])
