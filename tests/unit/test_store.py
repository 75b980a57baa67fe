"""The store's contract: migrations safe to rerun, upserts without duplicates, lock waits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pytest

from evaluator.workspace import store


@pytest.fixture
def memory_con():
    con = duckdb.connect(":memory:")
    store.migrate(con)
    yield con
    con.close()


def test_migrate_creates_every_contract_table(memory_con):
    tables = {row[0] for row in memory_con.execute("SHOW TABLES").fetchall()}
    for name in ["images", "image_scores", "artist_scores", "artist_neighbors", "comparisons",
                 "artists", "checkpoints", "templates", "runs", "schema_migrations"]:
        assert name in tables
    assert store.schema_version(memory_con) == store.SCHEMA_VERSION


def test_migrate_twice_applies_nothing_the_second_time(memory_con):
    assert store.migrate(memory_con) == []
    count = memory_con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert count == len(store.MIGRATIONS)


def test_upsert_replaces_by_key_and_never_duplicates(memory_con):
    first = pd.DataFrame({"image_id": [1, 2], "model": ["m", "m"], "metric": ["x", "x"], "value": [0.1, 0.2]})
    second = pd.DataFrame({"image_id": [2, 3], "model": ["m", "m"], "metric": ["x", "x"], "value": [0.5, 0.3]})
    with store.transaction(memory_con):
        store.upsert_df(memory_con, "image_scores", first, key=["image_id", "model", "metric"])
    with store.transaction(memory_con):
        store.upsert_df(memory_con, "image_scores", second, key=["image_id", "model", "metric"])
    rows = memory_con.execute("SELECT image_id, value FROM image_scores ORDER BY image_id").fetchall()
    assert rows == [(1, 0.1), (2, 0.5), (3, 0.3)]


def _delete_then_insert(con, table: str, frame: pd.DataFrame, key: list[str]) -> None:
    """The naive upsert the fast path must equal."""
    con.register("naive", frame)
    match = " AND ".join(f"t.{k} = n.{k}" for k in key)
    con.execute(f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM naive n WHERE {match})")
    con.execute(f"INSERT INTO {table} ({', '.join(frame.columns)}) SELECT * FROM naive")
    con.unregister("naive")


@pytest.mark.parametrize("table, first, second, key, in_place", [
    # the primary key, every column: replaced in place
    ("image_scores", {"image_id": [1, 2, 4], "model": ["m"] * 3, "metric": ["x", "x", "y"], "value": [0.1, 0.2, 0.4]},
     {"image_id": [2, 3, 4], "model": ["m"] * 3, "metric": ["x", "x", "x"], "value": [0.5, 0.3, None]},
     ["image_id", "model", "metric"], True),
    # a column left out: the replaced row must lose its old value, as delete-then-insert does
    ("runs", {"run_id": ["a", "b"], "kind": ["score", "score"], "status": ["done", "done"], "message": ["m1", "m2"]},
     {"run_id": ["b", "c"], "kind": ["index", "index"], "status": ["failed", "done"]},
     ["run_id"], False),
    # a secondary index on rewritten columns (images' checkpoint, artist_id): delete-then-insert
    ("images", {"image_id": [1, 2], "unit_id": ["u1", "u2"], "source": ["generated"] * 2, "checkpoint": ["a", "a"]},
     {"image_id": [2, 3], "unit_id": ["u2", "u3"], "source": ["generated"] * 2, "checkpoint": ["b", "b"]},
     ["image_id"], False),
])
def test_upsert_writes_what_delete_then_insert_writes(table, first, second, key, in_place):
    cons = [duckdb.connect(":memory:") for _ in range(2)]
    for con in cons:
        store.migrate(con)
    frames = [pd.DataFrame(first), pd.DataFrame(second)]
    for frame in frames:
        with store.transaction(cons[0]):
            store.upsert_df(cons[0], table, frame, key)
        with store.transaction(cons[1]):
            _delete_then_insert(cons[1], table, frame, key)
    columns = list(dict.fromkeys([*frames[0].columns, *frames[1].columns]))  # what either frame wrote
    got, want = (con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall() for con in cons)
    assert got == want
    assert store._replaces_in_place(cons[0], table, list(frames[1].columns), key) == in_place


def test_transaction_rolls_back_on_error(memory_con):
    frame = pd.DataFrame({"name": ["style"], "text": ["a painting in the style of {name}"]})
    with pytest.raises(RuntimeError), store.transaction(memory_con):
        store.upsert_df(memory_con, "templates", frame, key=["name"])
        raise RuntimeError("boom")
    assert memory_con.execute("SELECT count(*) FROM templates").fetchone()[0] == 0


def test_read_only_open_of_missing_store_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="atelier.duckdb"):
        store.connect(tmp_path / "atelier.duckdb", read_only=True)


def _hold_writer(path, seconds: float) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys, time, duckdb
        con = duckdb.connect({str(path)!r})
        con.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        print("locked", flush=True)
        time.sleep({seconds})
        con.close()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_reader_waits_for_a_writer_to_release(tmp_path):
    path = tmp_path / "atelier.duckdb"
    with store.open_store(path):
        pass
    proc = _hold_writer(path, 1.0)
    start = time.monotonic()
    with store.open_store(path, read_only=True, timeout=20) as con:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 0
    assert time.monotonic() - start > 0.3  # it did wait for the other process
    proc.wait(timeout=20)


def test_lock_held_past_timeout_gives_a_clear_error(tmp_path):
    path = tmp_path / "atelier.duckdb"
    with store.open_store(path):
        pass
    proc = _hold_writer(path, 5.0)
    try:
        with pytest.raises(store.StoreLockedError, match="locked by another process"):
            store.connect(path, read_only=True, timeout=0.5)
    finally:
        proc.kill()
        proc.wait()


def test_an_image_id_alone_finds_its_scores_through_an_index(memory_con):
    # The (image_id, model, metric) key serves only lookups that give all three; the
    # gallery's image detail gives the id alone, which scanned 50M rows before migration 10.
    memory_con.execute("INSERT INTO image_scores SELECT hash(range) // 2, 'm', 'x', 0.5 FROM range(20000)")
    image_id = memory_con.execute("SELECT image_id FROM image_scores LIMIT 1 OFFSET 777").fetchone()[0]
    plan = memory_con.execute("EXPLAIN ANALYZE SELECT metric, value FROM image_scores WHERE image_id = ?",
                              [image_id]).fetchall()[0][1]
    assert "Index Scan" in plan, plan
