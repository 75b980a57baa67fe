"""Hostile user SQL (issue 12 item 2): memory, size and time limits; `atelier sql`'s guard.

Builds a small store in tmp_path (DuckDB only); runs queries through ``run_user_sql`` in a
child Python process whose peak memory (its own and its query worker's) is measured, and
`atelier sql` as a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.hardening import run_atelier

from evaluator.workspace import queries as q

HOSTILE = "\x1b]0;pwned\x07title\x1b[31mred\x1b[0m\x00nul\rcr\ttab"

# Run one query through run_user_sql in a fresh process; print what happened and the peak
# resident memory of that process and of its children (the query worker).
PROBE = r"""
import json, resource, sys, time
from dataclasses import dataclass
from pathlib import Path
from evaluator.workspace import queries as q

@dataclass
class StoreFile:
    path: Path
    lock_timeout: float = 5.0

started = time.perf_counter()
outcome = {"error": None}
try:
    result = q.run_user_sql(StoreFile(Path(sys.argv[1])), sys.argv[2], time_limit=float(sys.argv[3]))
    outcome.update(rows=len(result.frame), truncated_by=result.truncated_by, nbytes=result.nbytes)
except Exception as exc:
    outcome.update(error=type(exc).__name__, message=str(exc))
outcome["seconds"] = time.perf_counter() - started
# VmHWM is this process's own peak: ru_maxrss of RUSAGE_SELF keeps the peak of the process
# that forked it across exec (pytest's, over 1 GB in a full run), so it would measure pytest.
with open("/proc/self/status") as status:
    hwm = next(line for line in status if line.startswith("VmHWM:"))
outcome["self_mb"] = int(hwm.split()[1]) / 1024
outcome["children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(outcome))
"""


@dataclass
class _StoreFile:
    """What run_user_sql needs of a store, for the tests that call it in this process."""

    path: Path
    lock_timeout: float = 5.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from evaluator.workspace.store import open_store

    root = tmp_path_factory.mktemp("sqlwd")
    with open_store(root / "atelier.duckdb") as con:
        con.execute("CREATE TABLE hostile (id INTEGER, c VARCHAR)")
        con.execute("INSERT INTO hostile VALUES (1, ?)", [HOSTILE])
    return root


def probe(workdir: Path, sql: str, time_limit: float = 10.0) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(workdir / "atelier.duckdb"), sql, str(time_limit)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("sql", [
    "SELECT repeat('x', 1000000000) AS s",  # one 1 GB value: DuckDB's memory_limit does not count it
    "SELECT string_agg(repeat('x', 1000), ',') FROM range(3000000)",  # a 3 GB aggregate
    "SELECT repeat('x', 100000000) AS s FROM range(20)",  # 2 GB in one chunk
])
def test_huge_values_are_refused_quickly_under_2_gb(workdir, sql):
    outcome = probe(workdir, sql)
    assert outcome["error"] == "QueryLimitError", outcome
    assert "memory" in outcome["message"]
    assert outcome["seconds"] < 20, outcome  # was 103 s
    assert outcome["self_mb"] < 600, outcome
    assert outcome["children_mb"] < 1700, outcome  # was 9.8 GB
    assert outcome["self_mb"] + outcome["children_mb"] < 2048, outcome


def test_result_is_capped_in_bytes_as_well_as_rows(workdir):
    outcome = probe(workdir, "SELECT repeat('x', 1000000) AS s FROM range(200)")
    assert outcome["error"] is None, outcome
    assert outcome["truncated_by"] == "bytes"
    assert 0 < outcome["nbytes"] <= q.SQL_BYTE_LIMIT
    assert 0 < outcome["rows"] < 200
    assert outcome["self_mb"] + outcome["children_mb"] < 2048, outcome


def test_time_limit_holds_within_a_margin(workdir):
    started = time.monotonic()
    outcome = probe(workdir, "SELECT sum(hash(a.range * b.range)) FROM range(100000) a, range(100000) b",
                    time_limit=1.0)
    elapsed = time.monotonic() - started
    assert outcome["error"] == "TimeoutError" and "1 s limit" in outcome["message"], outcome
    # 1 s of query, plus two interpreters starting (probe and worker) on a busy machine
    assert elapsed < 8.0, elapsed


def test_user_sql_runs_with_capped_duckdb_settings(workdir):
    outcome = probe(workdir, "SELECT current_setting('threads') AS t")
    assert outcome["error"] is None
    store = _StoreFile(workdir / "atelier.duckdb")
    frame = q.run_user_sql(store, "SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m").frame
    assert int(frame.t.iloc[0]) == q.SQL_THREADS
    assert frame.m.iloc[0].replace(" ", "").lower().startswith(("953.6mib", "1.0gib", "1gb", "1000.0mb"))
    with pytest.raises(q.UnsafeQueryError):
        q.run_user_sql(store, "SET memory_limit = '100GB'")


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELECT 1; DROP TABLE hostile", "CREATE TABLE t AS SELECT 1"])
def test_cli_refuses_a_second_statement_or_a_write(workdir, sql):
    done = run_atelier("sql", "--workdir", str(workdir), sql, timeout=60)
    assert done.returncode != 0
    assert "one statement" in done.stderr or "read-only" in done.stderr, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_cli_strips_terminal_escapes_from_cells(workdir, fmt):
    done = run_atelier("sql", "--workdir", str(workdir), "--format", fmt, "SELECT c FROM hostile", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\x00" not in done.stdout
    assert "\r" not in done.stdout
    assert "pwned" not in done.stdout  # an OSC sequence goes whole, its payload with it
    assert all(word in done.stdout for word in ("title", "red", "nul", "cr", "tab"))  # the text stays


def test_cli_json_escapes_controls(workdir):
    done = run_atelier("sql", "--workdir", str(workdir), "--format", "json", "SELECT c FROM hostile", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and json.loads(done.stdout)[0]["c"] == HOSTILE


def test_cli_limit_streams(workdir):
    started = time.monotonic()
    done = run_atelier("sql", "--workdir", str(workdir), "--limit", "5", "--format", "csv",
                       "SELECT range AS i, repeat('y', 100) AS pad FROM range(10000000)", timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "i,pad" and [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3", "4"]
    assert len(done.stdout) < 2000
    assert "row limit of 5" in done.stderr
    assert elapsed < 8.0, elapsed  # materializing 10M rows of 100 bytes first took far longer


# ------------------------------------------------------------------ the spare worker

def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie no one reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[:2] == ["State:", "Z"] for line in status)
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(pid)


@pytest.fixture
def spare():
    kept = q.keep_spare_worker()
    yield kept
    kept.close()


def test_the_spare_worker_runs_the_next_query_and_no_process_runs_two(workdir, spare):
    store = _StoreFile(workdir / "atelier.duckdb")
    waiting = spare.pid
    assert waiting, "keeping a spare starts one at once"
    first = q.run_user_sql(store, "SELECT id FROM hostile")
    assert first.worker_pid == waiting and first.frame.id.tolist() == [1]
    assert spare.pid not in (0, waiting), "a new spare is started after each query"
    second = q.run_user_sql(store, "SELECT 2 AS two")
    assert second.worker_pid not in (0, waiting) and second.frame.two.tolist() == [2]
    assert _gone(waiting), "a used worker exits with its query"


def test_a_dead_spare_is_replaced_not_used(workdir, spare):
    dead = spare.pid
    os.kill(dead, signal.SIGKILL)
    assert _wait_gone(dead, 10)
    result = q.run_user_sql(_StoreFile(workdir / "atelier.duckdb"), "SELECT 3 AS three")
    assert result.frame.three.tolist() == [3] and result.worker_pid not in (0, dead)


def test_an_unused_spare_exits_with_its_parent():
    # A parent that keeps a spare is killed outright: the spare reads end-of-input and exits.
    script = ("import sys, time\nfrom evaluator.workspace import queries as q\n"
              "print(q.keep_spare_worker().pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        orphan = int(parent.stdout.readline())
        assert not _gone(orphan)
    finally:
        parent.kill()
        parent.wait()
    assert _wait_gone(orphan, 20), f"spare {orphan} outlived its parent"
