"""Steps 4 and 5 of a curation run: set-level signals and flags, then one transaction.

The new contents are inserted first (inside the transaction), then every content of the
source is read back, so duplicate groups, outlier scores and flags are computed over the
whole source, new and earlier alike, with this run's thresholds.
"""

from __future__ import annotations

from typing import Any

from evaluator.curation.config import Thresholds

_Run = Any  # evaluator.curation.runner._Run (not imported: the runner imports this module)

CONTENT_COLUMNS = [
    "sha256", "file_bytes", "width", "height", "megapixels", "error", "phash", "phash_centre", "sd_mark",
    "sd_mark_agreement", "sd_mark_reason", "watermark_prob", "watermark_model", "aesthetic", "aesthetic_head",
    "embedding_model", "embedding", "artist_id", "caption", "signals_key",
]
FILE_COLUMNS = ["source", "path", "sha256", "image_id", "artist_id", "caption", "duplicate_of_path", "flags",
                "run_id"]


def content_flags(row: dict, t: Thresholds) -> list[str]:
    """The content-level reason codes of one ``curation`` row under thresholds ``t``."""
    flags = []
    if row.get("error") is not None:
        return ["unreadable"]
    width, height = row["width"], row["height"]
    if min(width, height) < t.min_side:
        flags.append("low_resolution")
    if max(width, height) / max(min(width, height), 1) > t.max_aspect:
        flags.append("extreme_aspect")
    if row.get("duplicate_of") is not None:
        flags.append("near_duplicate")
    if _at_least(row.get("sd_mark_agreement"), t.sd_mark_agreement):
        flags.append("watermark_sd")
    if _at_least(row.get("watermark_prob"), t.max_watermark):
        flags.append("watermark")
    aesthetic = row.get("aesthetic")
    if aesthetic is not None and aesthetic == aesthetic and aesthetic < t.min_aesthetic:
        flags.append("aesthetic_low")
    z = row.get("outlier_z")
    if z is not None and z == z and z < -t.outlier_z:
        flags.append("outlier")
    return flags


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and value == value and value >= threshold


def _set_level(contents: list[dict], run: _Run) -> None:
    """Duplicate groups, outlier z and flags, in place, over every content of the source."""
    import numpy as np

    from evaluator.curation.duplicates import (
        Member,
        embedding_pairs,
        group_members,
        hash_pairs,
        hex_codes,
    )
    from evaluator.curation.outliers import centroid_scores

    t = run.options.thresholds
    readable = [c for c in contents if c["error"] is None]
    pairs: dict = {}
    if readable:
        full, centre = hex_codes([c["phash"] for c in readable]), hex_codes([c["phash_centre"] for c in readable])
        pairs.update(hash_pairs(full, centre, t.phash_distance))
    embedded = [i for i, c in enumerate(readable) if c.get("embedding") is not None]
    if len(embedded) >= 2:
        vecs = np.array([readable[i]["embedding"] for i in embedded], dtype=np.float32)
        pairs.update({(embedded[a], embedded[b]): s for (a, b), s in embedding_pairs(vecs, t.near_cosine).items()})
        cos, z = centroid_scores(vecs, [readable[i]["artist_id"] for i in embedded])
        for k, i in enumerate(embedded):
            readable[i]["centroid_cosine"] = None if np.isnan(cos[k]) else float(cos[k])
            readable[i]["outlier_z"] = None if np.isnan(z[k]) else float(z[k])
    members = [Member(c["sha256"], c["width"] * c["height"], str(c["first_seen"]), c["_first_path"]) for c in readable]
    for c, (group, of) in zip(readable, group_members(members, pairs), strict=True):
        c["duplicate_group"], c["duplicate_of"] = group, of
    for c in contents:
        if c["error"] is not None:
            c["duplicate_group"], c["duplicate_of"] = c["sha256"], None
        c["flags"] = content_flags(c, t)


def _file_rows(run: _Run, by_sha: dict[str, dict]) -> list[dict]:
    """One row per file: its content's flags, plus ``duplicate`` after the first path of a content."""
    first_path: dict[str, str] = {}
    rows = []
    for item, sha in run.files:
        content = by_sha[sha]
        earlier = first_path.setdefault(sha, item.key)
        flags = list(content["flags"])
        if earlier != item.key:
            flags.insert(0, "duplicate")
        rows.append({"source": run.source.name, "path": item.key, "sha256": sha, "image_id": item.image_id,
                     "artist_id": item.artist_id, "caption": item.caption or content.get("caption"),
                     "duplicate_of_path": earlier if earlier != item.key else None, "flags": flags,
                     "run_id": run.summary.run_id})
    return rows


def write_run(run: _Run) -> None:
    """Steps 4-5 in one transaction, then the run record and the summary counts."""
    import pandas as pd

    from evaluator.workspace.store import open_store, transaction, upsert_df

    now = run.started
    record = _run_record(run)
    with open_store(run.wd.store) as con, transaction(con):
        _insert_new(con, run, now)
        contents = _read_contents(con, [sha for _, sha in run.files], run)
        _set_level(contents, run)
        _update_contents(con, contents, run)
        con.execute("DELETE FROM curation_files WHERE source = ?", [run.source.name])
        files = _file_rows(run, {c["sha256"]: c for c in contents})
        _insert(con, "curation_files", files, FILE_COLUMNS)
        upsert_df(con, "runs", pd.DataFrame([record.to_json()]), key=["run_id"])
    for row in files:
        for code in row["flags"]:
            run.summary.counts[code] = run.summary.counts.get(code, 0) + 1
    run.summary.n_kept = sum(not row["flags"] for row in files)
    record.write(run.wd)


def _insert_new(con, run: _Run, now) -> None:
    """New contents (replacing a row computed with other models, keeping its first_seen)."""
    if not run.new:
        return
    rows = [{k: r[k] for k in CONTENT_COLUMNS} for r in run.new.values()]
    shas = [r["sha256"] for r in rows]
    seen = dict(con.execute("SELECT sha256, first_seen FROM curation WHERE list_contains(?, sha256)",
                            [shas]).fetchall())
    for row in rows:
        row["first_seen"] = seen.get(row["sha256"], now)
        row["updated_at"], row["run_id"] = now, run.summary.run_id
    con.execute("DELETE FROM curation WHERE list_contains(?, sha256)", [shas])
    _insert(con, "curation", rows, [*CONTENT_COLUMNS, "first_seen", "updated_at", "run_id"])


def _read_contents(con, shas: list[str], run: _Run) -> list[dict]:
    """Every content of the source as dicts, in first-file order, with its first path."""
    first: dict[str, str] = {}
    for item, sha in run.files:
        first.setdefault(sha, item.key)
    cur = con.execute("SELECT * FROM curation WHERE list_contains(?, sha256)", [list(first)])
    names = [d[0] for d in cur.description]
    by_sha = {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}
    out = []
    for sha, path in first.items():
        content = by_sha[sha]
        content["_first_path"] = path
        content["centroid_cosine"], content["outlier_z"] = None, None
        out.append(content)
    return out


def _update_contents(con, contents: list[dict], run: _Run) -> None:
    import pyarrow as pa

    table = pa.table({
        "sha256": pa.array([c["sha256"] for c in contents], pa.string()),
        "centroid_cosine": pa.array([c["centroid_cosine"] for c in contents], pa.float64()),
        "outlier_z": pa.array([c["outlier_z"] for c in contents], pa.float64()),
        "duplicate_of": pa.array([c["duplicate_of"] for c in contents], pa.string()),
        "duplicate_group": pa.array([c["duplicate_group"] for c in contents], pa.string()),
        "flags": pa.array([c["flags"] for c in contents], pa.list_(pa.string())),
    })
    con.register("_curation_update", table)
    try:
        con.execute("""UPDATE curation SET centroid_cosine = u.centroid_cosine, outlier_z = u.outlier_z,
                       duplicate_of = u.duplicate_of, duplicate_group = u.duplicate_group, flags = u.flags
                       FROM _curation_update u WHERE curation.sha256 = u.sha256""")
    finally:
        con.unregister("_curation_update")


def _insert(con, table: str, rows: list[dict], columns: list[str]) -> None:
    """Insert dict rows through Arrow (list columns typed explicitly, empty lists included)."""
    import pyarrow as pa

    if not rows:
        return
    data = {}
    for col in columns:
        values = [r.get(col) for r in rows]
        if col == "embedding":
            data[col] = pa.array(values, pa.list_(pa.float32()))
        elif col == "flags":
            data[col] = pa.array(values, pa.list_(pa.string()))
        else:
            data[col] = pa.array(values)
    frame = pa.table(data)
    con.register("_curation_insert", frame)
    try:
        names = ", ".join(columns)
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _curation_insert")
    finally:
        con.unregister("_curation_insert")


def _run_record(run: _Run) -> Any:
    from evaluator.workspace.records import Provenance, RunRecord, utcnow

    models = run.models
    config = {
        "source": run.source.name, "thresholds": run.options.thresholds.as_dict(),
        "embedding_model": models.clip_key, "aesthetic_head": models.head.path if models.head else None,
        "watermark_model": models.detector.path if models.detector else None, "workers": run.options.workers,
    }
    return RunRecord(run_id=run.summary.run_id, kind="curate", provenance=Provenance.collect(),
                     started_at=run.started, finished_at=utcnow(), config=config,
                     n_done=run.summary.n_computed, n_skipped=run.summary.n_skipped,
                     message="; ".join(run.summary.notices) or None)
