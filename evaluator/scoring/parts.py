"""Per-rank ``image_scores`` part files: the image-level metrics of a launch's ranks.

Under ``torchrun --nproc_per_node N atelier score`` every rank computes the image-level
metrics of the new images it owns (``image_id % N == rank``) and writes them here;
rank 0 reads every part with DuckDB and writes the store in one transaction, so the
store has one writer (DuckDB allows one) and ranks > 0 never open it for writing.

Writes ``DIR/image_scores/<model>/<context>/rank<r>-<uuid>.parquet`` (image_id int64,
model, metric, value float64), each atomically (a temporary name, then a rename).
``<context>`` is the scoring context's digest: image scores depend on it alone (model,
catalog, references, readout; see ``inputs.fingerprint``), so parts left by a killed
launch are reused by a rerun under the same context, which computes only the gaps.
Rank 0 removes the model's parts once the store holds them.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.errors import StateError
from evaluator.workspace.workdir import model_slug

if TYPE_CHECKING:
    import pandas as pd

    from evaluator.generation.distributed import DistEnv
    from evaluator.workspace.workdir import Workdir

PART_COLUMNS = ["image_id", "model", "metric", "value"]


def parts_root(wd: Workdir, model: str) -> Path:
    return wd.root / "image_scores" / model_slug(model)


def parts_dir(wd: Workdir, model: str, context: str) -> Path:
    return parts_root(wd, model) / context


def _paths(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("rank*.parquet") if not p.name.startswith("."))


def read_parts(folder: Path) -> pd.DataFrame:
    """Every row of the folder's parts (DuckDB over the Parquet files), one per (image, metric).

    Two parts holding one image would mean two ranks scored it: refused, naming the files.
    """
    import duckdb
    import pandas as pd

    paths = _paths(folder)
    if not paths:
        return pd.DataFrame({"image_id": pd.Series(dtype="int64"), "model": pd.Series(dtype=object),
                             "metric": pd.Series(dtype=object), "value": pd.Series(dtype="float64")})
    con = duckdb.connect()
    try:
        rows = con.execute("SELECT image_id, model, metric, value, filename FROM read_parquet(?, filename = true)",
                           [paths]).df()
    finally:
        con.close()
    twice = rows[rows.duplicated(["image_id", "metric"], keep=False)]
    if len(twice):
        files = sorted(set(twice["filename"]))
        raise StateError(f"image {int(twice['image_id'].iloc[0])} is scored in more than one part ({', '.join(files)}): "
                         f"two launches raced on one workdir; delete {folder} and rerun")
    return rows[PART_COLUMNS]


def write_part(folder: Path, frame: pd.DataFrame, env: DistEnv) -> Path | None:
    """One rank's rows as ``rank<r>-<uuid>.parquet`` (atomic); None when there are none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    if frame.empty:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame[PART_COLUMNS].astype({"image_id": "int64", "value": "float64"}),
                                 preserve_index=False)
    path = folder / f"rank{env.rank}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def clear_parts(wd: Workdir, model: str) -> None:
    """Remove the model's parts (every context): the store now holds what they held."""
    shutil.rmtree(parts_root(wd, model), ignore_errors=True)
