"""The one transaction of a scoring run: every table, ``score_state`` and the run rows.

Reads nothing but what it is given. Writes the store (``DIR/atelier.duckdb``: images,
artists, templates, checkpoints, runs, embedding_errors, the score tables, reference
images and prototypes, score_state) in ONE transaction, so a reader sees the store
before the run or after it, never half of it; then ``runs/<run_id>.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from evaluator.workspace.records import RunRecord, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from evaluator.embedding.index import IndexInfo
    from evaluator.scoring.aggregate import ScoreTables
    from evaluator.workspace.workdir import Workdir

SCORE_TABLE_KEYS = (
    ("image_scores", ["image_id", "model", "metric"]),
    ("artist_scores", ["checkpoint", "artist_id", "model", "metric"]),
    ("checkpoint_scores", ["checkpoint", "model", "metric"]),
    ("comparisons", ["base", "finetune", "artist_id", "model", "metric"]),
)
EMBEDDING_ERROR_COLUMNS = ["image_id", "model", "error", "run_id"]


@dataclass
class StoreRows:
    """Every row one scoring write puts in the store, besides its own run rows."""

    images: pd.DataFrame  # only rows not already stored as they are
    artists: pd.DataFrame
    templates: dict[str, str]
    checkpoints: pd.DataFrame
    runs: pd.DataFrame  # generation and import runs, from their records
    tables: ScoreTables
    embedding_errors: pd.DataFrame
    reference_images: pd.DataFrame
    reference_prototypes: pd.DataFrame
    fingerprint: dict  # score_state: what this write was computed from
    # The scoring context changed (model, catalog, references, retrieval ks, readout,
    # definitions): every image was rescored, so the model's old image scores go first.
    # Otherwise a metric that no longer applies (references removed, a k dropped, the
    # retired retrieval_map@k) would keep its stale rows next to the new ones.
    new_context: bool = False
    pairs: list[tuple[str, str]] = field(default_factory=list)  # the (base, finetune) pairs compared


@dataclass
class ScoreRun:
    """The run being recorded: its ``runs`` row (finished at commit) and its index update."""

    record: RunRecord  # kind='score'; timings are completed by the write
    model: str
    index_info: IndexInfo
    index_config: dict[str, Any]
    t_start: float  # time.perf_counter() when the run started: timings["total"]


def embedding_errors_frame(errors: dict[int, str], model: str, run_id: str) -> pd.DataFrame:
    """``embedding_errors`` rows: the images this run could not read."""
    import pandas as pd

    rows = [{"image_id": i, "model": model, "error": e, "run_id": run_id} for i, e in sorted(errors.items())]
    return pd.DataFrame(rows, columns=EMBEDDING_ERROR_COLUMNS)


def index_record(score: RunRecord, info: IndexInfo, index_config: dict[str, Any]) -> RunRecord:
    """The ``kind='index'`` row of a score run that added vectors to the FAISS index."""
    from dataclasses import asdict

    return RunRecord(
        run_id=f"index-{score.run_id.removeprefix('score-')}", kind="index",
        provenance=replace(score.provenance, device="cpu", dtype="float32"),  # FAISS runs on the CPU in float32
        started_at=score.started_at, finished_at=score.finished_at, config=index_config,
        timings={"seconds": info.seconds}, n_done=info.added, message=json.dumps(asdict(info)),
    )


def _table_columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _write_inputs(con, rows: StoreRows) -> dict[str, int]:
    """The rows read from the workdir: artists, templates, checkpoints, runs, images, errors."""
    import pandas as pd

    from evaluator.workspace.store import upsert_df

    written: dict[str, int] = {}
    if len(rows.artists):
        cols = [c for c in rows.artists.columns if c in _table_columns(con, "artists")]
        written["artists"] = upsert_df(con, "artists", rows.artists[cols], ["artist_id"])
    templates = pd.DataFrame({"name": list(rows.templates), "text": list(rows.templates.values())})
    written["templates"] = upsert_df(con, "templates", templates, ["name"])
    written["checkpoints"] = upsert_df(con, "checkpoints", rows.checkpoints, ["name"])
    written["runs"] = upsert_df(con, "runs", rows.runs, ["run_id"])
    written["images"] = upsert_df(con, "images", rows.images, ["image_id"])
    written["embedding_errors"] = upsert_df(con, "embedding_errors", rows.embedding_errors, ["image_id", "model"])
    return written


def _write_scores(con, rows: StoreRows, model: str) -> dict[str, int]:
    """The score tables (neighbours replaced per model) and the reference tables."""
    from evaluator.workspace.store import upsert_df

    written: dict[str, int] = {}
    _drop_superseded(con, rows, model)
    for table, key in SCORE_TABLE_KEYS:
        frame = rows.tables.get(table)
        if frame is not None and len(frame):
            written[table] = upsert_df(con, table, frame, key)
    neighbors = rows.tables.get("artist_neighbors")
    if neighbors is not None and len(neighbors):
        con.execute("DELETE FROM artist_neighbors WHERE model = ?", [model])
        written["artist_neighbors"] = upsert_df(con, "artist_neighbors", neighbors, ["checkpoint", "model", "artist_id", "rank"])
    written["reference_images"] = upsert_df(con, "reference_images", rows.reference_images, ["artist_id", "image_id"])
    written["reference_prototypes"] = upsert_df(con, "reference_prototypes", rows.reference_prototypes, ["artist_id", "model"])
    return written


def _drop_superseded(con, rows: StoreRows, model: str) -> None:
    """Rows of ``model`` this write recomputes in full: artist and checkpoint scores (always
    from every image), comparisons of the pairs compared now, and image scores when the
    context changed. What is not recomputed (a pair not compared this time) stays."""
    con.execute("DELETE FROM artist_scores WHERE model = ?", [model])
    con.execute("DELETE FROM checkpoint_scores WHERE model = ?", [model])
    for base, finetune in rows.pairs:
        con.execute("DELETE FROM comparisons WHERE model = ? AND base = ? AND finetune = ?", [model, base, finetune])
    if rows.new_context:
        con.execute("DELETE FROM image_scores WHERE model = ?", [model])


def _write_state_and_runs(con, rows: StoreRows, run: ScoreRun, t_write: float) -> list[RunRecord]:
    """``score_state`` and the run rows (score, plus index when it grew); returns the records."""
    import pandas as pd

    from evaluator.workspace.store import upsert_df

    score = run.record
    score.finished_at = utcnow()
    state = {"model": run.model, "fingerprint": json.dumps(rows.fingerprint, sort_keys=True),
             "run_id": score.run_id, "updated_at": score.finished_at}
    upsert_df(con, "score_state", pd.DataFrame([state]), ["model"])
    score.timings["write"] = round(time.perf_counter() - t_write, 3)
    score.timings["total"] = round(time.perf_counter() - run.t_start, 3)
    records = [score]
    if run.index_info.added:
        records.append(index_record(score, run.index_info, run.index_config))
    return records


def write_all(wd: Workdir, rows: StoreRows, run: ScoreRun, *, store_timeout: float) -> dict[str, int]:
    """Write everything in one transaction, then ``runs/<run_id>.json``; rows written per table."""
    import pandas as pd

    from evaluator.workspace.store import open_store, transaction, upsert_df

    t_write = time.perf_counter()
    with open_store(wd.store, timeout=store_timeout) as con, transaction(con):
        written = _write_inputs(con, rows)
        written |= _write_scores(con, rows, run.model)
        records = _write_state_and_runs(con, rows, run, t_write)
        written["runs"] += upsert_df(con, "runs", pd.DataFrame([r.row() for r in records]), ["run_id"])
    run.record.write(wd)
    return written
