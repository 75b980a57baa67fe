"""`atelier serve` answering while a real `atelier score` rewrites the store beside it.

Both are real processes on this machine (the server on a free loopback port). Clients
keep asking while the score run embeds and commits; every answer must be the last
committed state (200) or a 503 with Retry-After, never another status or a hang (each
request has a client timeout), and after the run the server shows the new scores.
Bounded: at most ``MAX_REQUESTS`` requests, and the score run at most ``SCORE_TIMEOUT`` s.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

pytestmark = pytest.mark.slow

ATELIER = str(Path(sys.executable).with_name("atelier"))
MAX_REQUESTS = 3000
SCORE_TIMEOUT = 600
CLIENTS = 4


def _serve(workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = workdir.parent / "serve.log"
    proc = subprocess.Popen([ATELIER, "serve", "--workdir", str(workdir), "--port", str(port), "--lock-wait", "0.5",
                             "--rate-limit", "0", "--snapshot-dir", str(workdir.parent / "snapshots")],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log.read_text()}")


def _stored_run(workdir: Path) -> str | None:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute("SELECT max(run_id) FROM score_state").fetchone()[0]
    finally:
        con.close()


def test_answers_during_a_real_score_run(pipeline_workdir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(pipeline_workdir, workdir)
    run_before = _stored_run(workdir)
    proc, url, log = _serve(workdir)
    seen: dict[int, int] = {}
    bad: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def ask() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                with lock:
                    if sum(seen.values()) >= MAX_REQUESTS:
                        return
                try:
                    answer = http.get("/scores", params={"limit": 20})
                    status = answer.status_code
                    if status == 503 and not answer.headers.get("retry-after"):
                        bad.append("503 without Retry-After")
                    elif status not in (200, 503):
                        bad.append(f"{status}: {answer.text[:200]}")
                except httpx.HTTPError as exc:  # a hang shows up as a client timeout
                    status = -1
                    bad.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    seen[status] = seen.get(status, 0) + 1
                time.sleep(0.02)

    clients = [threading.Thread(target=ask) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        # a new bootstrap count changes the score fingerprint: the run recomputes and rewrites
        score = subprocess.run([ATELIER, "score", "--workdir", str(workdir), "--model", str(workdir / "models" / "clip"),
                                "--bootstrap", "77"], capture_output=True, text=True, timeout=SCORE_TIMEOUT)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    try:
        assert score.returncode == 0, score.stderr[-2000:]
        assert not bad, bad[:5]
        assert seen.get(200, 0) > 0, seen
        run_after = _stored_run(workdir)
        assert run_after != run_before  # the run did write
        give_up = time.monotonic() + 60  # then the server shows what it wrote
        while httpx.post(url + "/sql", json={"query": "SELECT max(run_id) AS r FROM score_state"},
                         timeout=30).json()["rows"][0]["r"] != run_after:
            assert time.monotonic() < give_up, "the server never showed the score run's commit"
            time.sleep(0.5)
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
