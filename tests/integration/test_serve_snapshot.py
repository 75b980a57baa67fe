"""The server's store snapshots under a writer that commits during every copy."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pytest

from evaluator.serve import snapshot
from evaluator.serve.snapshot import StoreSnapshots
from evaluator.workspace.store import StoreLockedError

# A writer in its own process (a DuckDB connection in this one would drop this process's lock
# on the store when it closed): retries its open while the store is locked, then adds a row.
WRITER = """
import sys, time, duckdb
for _ in range(600):
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        time.sleep(0.02)
con.execute("INSERT INTO t VALUES (42)")
con.close()
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write(repr(time.time()))
"""


def _rows(snaps: StoreSnapshots) -> int:
    return snaps._current.con.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "atelier.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.execute("INSERT INTO t VALUES (1)")
    con.close()
    time.sleep(2 * snapshot.QUIET_SECONDS)
    return path


def test_a_store_written_during_every_copy_is_copied_holding_it_once_stale_too_long(store, tmp_path, monkeypatch):
    real_copy, writers = snapshot._copy_pair, []

    def copy_then_commit(source, target, *handle):
        real_copy(source, target, *handle)
        done = tmp_path / f"committed-{len(writers)}"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(done)])
        writers.append(writer)
        if not handle:  # a copy that does not hold the store: the commit lands before its check
            assert writer.wait(timeout=60) == 0
        else:  # one that holds it: the writer cannot get in (it would be done in well under this)
            time.sleep(1.5)
            assert writer.poll() is None

    monkeypatch.setattr(snapshot, "_copy_pair", copy_then_commit)
    monkeypatch.setattr(snapshot, "MAX_STALE_SECONDS", 0.3)
    snaps = StoreSnapshots(store, tmp_path / "snapshots", lock_wait=10)
    try:
        for _ in range(2):  # each copy is dropped: the store moved during it
            with pytest.raises(StoreLockedError, match="written during the copy"):
                snaps.refresh(10)
            time.sleep(2 * snapshot.QUIET_SECONDS)
        assert snaps._current is None and snaps.held_copies == 0
        time.sleep(0.3)
        snaps.refresh(10)  # stale past MAX_STALE_SECONDS: this copy holds the store
        assert snaps.held_copies == 1 and _rows(snaps) == 3  # the first row and the two dropped copies' commits
        # the writer that started during the held copy waited for it, then committed after it
        assert writers[-1].wait(timeout=60) == 0
        assert float((tmp_path / "committed-2").read_text()) > snaps._current.taken_at
        con = duckdb.connect(str(store), read_only=True)
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 4
        con.close()
        assert snaps.status()["stale"] is True and snaps.status()["held_copies"] == 1
    finally:
        snaps.close()


def test_a_good_copy_ends_the_staleness(store, tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_STALE_SECONDS", 0.3)
    snaps = StoreSnapshots(store, tmp_path / "snapshots", lock_wait=10)
    try:
        snaps._stale_since = time.monotonic() - 1  # as after dropped copies
        snaps.refresh(10)
        assert snaps.held_copies == 1 and snaps._stale_since is None and _rows(snaps) == 1
        subprocess.run([sys.executable, "-c", WRITER, str(store)], check=True)
        time.sleep(2 * snapshot.QUIET_SECONDS)
        snaps.refresh(10)  # no longer stale: a plain copy, checked afterwards
        assert snaps.held_copies == 1 and _rows(snaps) == 2
    finally:
        snaps.close()
