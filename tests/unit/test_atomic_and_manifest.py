"""Atomic writes leave no half file; manifests keep the latest record of each unit."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from catalog.atomic import atomic_path, atomic_write_text
from catalog.units import WorkUnit
from evaluator.workspace import store
from evaluator.workspace.manifest import ingest_manifests, read_manifests, write_shard


def test_failed_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "styles.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]


def _unit(seed: int) -> WorkUnit:
    return WorkUnit("base", "claude-monet", "style", "a painting in the style of Claude Monet",
                    "", seed, 64, 64, 4, 7.5, "default")


def _record(unit: WorkUnit, error, when) -> dict:
    return {**unit.to_dict(), "source": "generated", "path": f"images/{unit.relpath()}",
            "error": error, "created_at": when, "run_id": "r"}


def test_latest_manifest_record_wins_and_ingest_is_idempotent(tmp_path):
    unit_a, unit_b = _unit(0), _unit(1)
    early, late = dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)
    write_shard([_record(unit_a, "CUDA out of memory", early), _record(unit_b, None, early)],
                tmp_path / "manifests" / "run1" / "rank000-part00000.parquet")
    write_shard([_record(unit_a, None, late)], tmp_path / "manifests" / "run2" / "rank000-part00000.parquet")

    frame = read_manifests(tmp_path / "manifests")
    assert len(frame) == 2
    assert pd.isna(frame.set_index("unit_id").loc[unit_a.unit_id, "error"])

    with store.open_store(tmp_path / "atelier.duckdb") as con:
        for _ in range(2):
            with store.transaction(con):
                ingest_manifests(con, tmp_path / "manifests")
        rows = con.execute("SELECT unit_id, error FROM images ORDER BY unit_id").fetchall()
    assert sorted(rows) == sorted([(unit_a.unit_id, None), (unit_b.unit_id, None)])


def test_unit_ids_are_stable_and_sensitive_to_every_identity_field():
    unit = _unit(0)
    assert unit.unit_id == _unit(0).unit_id
    assert WorkUnit("base", "claude-monet", "style", "a painting in the style of Claude Monet",
                    "", 0, 64, 64, 4, 7.5, "default").unit_id == unit.unit_id
    variants = [
        WorkUnit("ft", *list(unit.to_dict().values())[1:11]),
        _unit(1),
        WorkUnit(*list(unit.to_dict().values())[:6], 128, 64, 4, 7.5, "default"),
        WorkUnit(*list(unit.to_dict().values())[:9], 7.0, "default"),
    ]
    assert len({v.unit_id for v in variants} | {unit.unit_id}) == 5
    assert 0 <= unit.image_id < 2**63
