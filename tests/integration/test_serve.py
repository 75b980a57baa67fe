"""`atelier serve` as a real uvicorn process on a free loopback port, over a demo store.

Every endpoint through ``evaluator.serve.client``; the token; SQL writes and file reads
refused; a stored path escaping the workdir refused; names checked with suggestions;
503 + Retry-After while a writer holds the store; clean exit on SIGTERM.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from evaluator.serve.client import ApiClientError, AtelierClient

pytestmark = pytest.mark.slow

ATELIER = str(Path(sys.executable).with_name("atelier"))
TOKEN = "s3cret-token-for-tests"
OUTSIDE_ID = 1  # an image row whose path escapes the workdir
CORS_ORIGIN = "http://front.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `atelier serve` child process and its log."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir.parent / f"serve-{self.port}.log"
        cmd = [ATELIER, "serve", "--workdir", str(workdir), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def wait_ready(self, headers: dict | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/health", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not come up:\n{self.log.read_text()}")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        return code, self.log.read_text()


@pytest.fixture(scope="module")
def workdir(pipeline_workdir: Path, tmp_path_factory) -> Path:
    """A copy of the demo workdir plus one image row whose stored paths point outside it."""
    root = tmp_path_factory.mktemp("serve") / "wd"
    shutil.copytree(pipeline_workdir, root)
    outside = root.parent / "outside.png"
    shutil.copy(next((root / "images").rglob("*.png")), outside)  # exists, so only the place is wrong
    con = duckdb.connect(str(root / "atelier.duckdb"))
    try:
        con.execute("""INSERT INTO images (image_id, unit_id, source, checkpoint, artist_id, template, seed,
                       path, thumb_path) VALUES (?, 'outside', 'imported', 'base', '_baseline', 'import', -1,
                       '../outside.png', '/etc/hostname')""", [OUTSIDE_ID])
    finally:
        con.close()
    return root


@pytest.fixture(scope="module")
def server(workdir: Path):
    srv = Server(workdir, "--model", str(workdir / "models" / "clip"), "--lock-wait", "0.5")
    srv.wait_ready()
    yield srv
    code, log = srv.stop()
    assert code == 0, log
    assert "Finished server process" in log


@pytest.fixture(scope="module")
def api(server: Server):
    with AtelierClient(server.url) as client:
        yield client


def store_rows(workdir: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(workdir / "atelier.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def an_image(workdir: Path, checkpoint: str = "base") -> tuple[int, str, str]:
    return store_rows(workdir, "SELECT image_id, path, thumb_path FROM images WHERE checkpoint = ? "
                               "AND source = 'generated' AND error IS NULL ORDER BY image_id LIMIT 1", [checkpoint])[0]


def test_health_and_checkpoints(api: AtelierClient, workdir: Path) -> None:
    health = api.health()
    assert health["schema_version"] == store_rows(workdir, "SELECT max(version) FROM schema_migrations")[0][0]
    assert health["models"] == [r[0] for r in store_rows(workdir, "SELECT DISTINCT model FROM checkpoint_scores")]
    assert health["counts"]["checkpoints"] == 3 and health["counts"]["images"] > 0
    first = api.checkpoints(limit=1)
    assert len(first["items"]) == 1 and first["next_offset"] == 1
    names = [row["checkpoint"] for row in api.pages("/checkpoints", limit=1)]
    assert sorted(names) == ["base", "ft-lora", "ft-weights"]


def test_artists_search_and_page_limits(api: AtelierClient, workdir: Path) -> None:
    artist_id, name = store_rows(workdir, "SELECT artist_id, name FROM artists WHERE artist_id IN "
                                          "(SELECT artist_id FROM images WHERE source = 'generated') LIMIT 1")[0]
    found = api.artists(q=name.lower(), limit=50)["items"]
    assert artist_id in [a["artist_id"] for a in found]
    with pytest.raises(ApiClientError) as err:
        api.artists(limit=100_000)
    assert err.value.status == 400 and err.value.field == "limit"
    with pytest.raises(ApiClientError) as err:
        api.artists(offset=-1)
    assert err.value.field == "offset"


def test_scores_filters_and_unknown_names(api: AtelierClient, workdir: Path) -> None:
    page = api.scores(checkpoint="ft-lora", metric="artist_similarity", limit=1000)
    expected = store_rows(workdir, "SELECT count(*) FROM artist_scores WHERE checkpoint = 'ft-lora' "
                                   "AND metric = 'artist_similarity'")[0][0]
    assert len(page["items"]) == expected > 0
    assert {(r["checkpoint"], r["metric"]) for r in page["items"]} == {("ft-lora", "artist_similarity")}
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in page["items"] if r["ci_low"] is not None)
    with pytest.raises(ApiClientError) as err:
        api.scores(metric="artist_similarty")
    assert err.value.status == 400 and err.value.field == "metric"
    assert "artist_similarty" in err.value.error and err.value.suggestions[0] == "artist_similarity"
    with pytest.raises(ApiClientError) as err:
        api.scores(checkpoint="ft-lorra")
    assert err.value.field == "checkpoint" and "ft-lora" in err.value.suggestions


def test_leaderboard(api: AtelierClient, workdir: Path) -> None:
    board = api.leaderboard(limit=1000)
    rows = store_rows(workdir, "SELECT checkpoint, metric, value FROM checkpoint_scores WHERE model = ?",
                      [board["model"]])
    got = {(r["checkpoint"], r["metric"]): r["value"] for r in board["items"]}
    assert len(got) == len(rows)
    for checkpoint, metric, value in rows:
        if value is not None:
            assert got[(checkpoint, metric)] == pytest.approx(value)
    with pytest.raises(ApiClientError) as err:
        api.leaderboard(model="tiny-clp")
    assert err.value.field == "model" and err.value.suggestions


def test_comparisons_what_the_finetune_lost(api: AtelierClient, workdir: Path) -> None:
    counts = dict(store_rows(workdir, "SELECT verdict, count(*) FROM comparisons WHERE finetune = 'ft-lora' "
                                      "AND metric = 'artist_similarity' GROUP BY verdict"))
    page = api.comparisons(finetune="ft-lora", metric="artist_similarity", verdict="kept", limit=1000)
    assert page["base"] == "base" and len(page["items"]) == counts.get("kept", 0)
    assert {r["verdict"] for r in page["items"]} <= {"kept"}
    assert page["summary"]["artists"] == sum(counts.values())
    deltas = [r["delta"] for r in page["items"] if r["delta"] is not None]
    assert deltas == sorted(deltas)  # ascending by default: the biggest losses first
    with pytest.raises(ApiClientError) as err:
        api.comparisons(metric="artist_similarity")
    assert err.value.field == "finetune" and set(err.value.suggestions) == {"ft-lora", "ft-weights"}
    with pytest.raises(ApiClientError) as err:
        api.comparisons(finetune="ft-lora", metric="artist_similarity", verdict="lots")
    assert err.value.field == "verdict" and "lost" in err.value.suggestions


def test_neighbors(api: AtelierClient, workdir: Path) -> None:
    artist = store_rows(workdir, "SELECT artist_id FROM artist_neighbors LIMIT 1")[0][0]
    found = api.neighbors(artist, checkpoint="base", k=2)
    assert found["items"] and all(r["rank"] <= 2 and r["checkpoint"] == "base" for r in found["items"])
    with pytest.raises(ApiClientError) as err:
        api.neighbors(artist[:-1] + "x")
    assert err.value.field == "artist_id" and artist in err.value.suggestions


def test_images_metadata_files_and_traversal(api: AtelierClient, workdir: Path) -> None:
    image_id, path, thumb = an_image(workdir)
    detail = api.image(image_id)
    assert detail["image"]["image_id"] == image_id and detail["image"]["path"] == path
    assert "Steps:" in detail["parameters"] and detail["generation"]["seed"] == detail["image"]["seed"]
    assert {s["metric"] for s in detail["scores"]} >= {"artist_similarity"}
    assert api.image_file(image_id) == (workdir / path).read_bytes()
    assert api.image_file(image_id, thumb=True) == (workdir / thumb).read_bytes()
    for thumb_flag in (False, True):
        with pytest.raises(ApiClientError) as err:
            api.image_file(OUTSIDE_ID, thumb=thumb_flag)
        assert err.value.status == 403 and "outside the workdir" in err.value.error
    with pytest.raises(ApiClientError) as err:
        api.image(12345)
    assert err.value.status == 404 and err.value.field == "image_id"
    response = httpx.get(api.http.base_url.join("/images/..%2F..%2Fetc%2Fpasswd/file"))
    assert response.status_code in (400, 404) and b"root:" not in response.content


def test_sql_read_only(api: AtelierClient, workdir: Path) -> None:
    result = api.sql("SELECT checkpoint, count(*) AS n FROM images GROUP BY ALL ORDER BY checkpoint")
    assert result["columns"] == ["checkpoint", "n"] and result["truncated"] is False
    assert [r["checkpoint"] for r in result["rows"]] == [r[0] for r in store_rows(
        workdir, "SELECT DISTINCT checkpoint FROM images ORDER BY checkpoint")]
    assert api.sql("SELECT * FROM range(50)", row_limit=10)["truncated"] is True
    assert "'=1+1" in api.sql("SELECT '=1+1' AS f", format="csv")
    for query, words in [("CREATE TABLE t (a INT)", "CREATE"), ("DELETE FROM images", "DELETE"),
                         ("SELECT 1; SELECT 2", "one statement"),
                         ("SELECT * FROM read_csv('/etc/passwd')", "cannot read files"),
                         ("COPY images TO '/tmp/x.csv'", "COPY")]:
        with pytest.raises(ApiClientError) as err:
            api.sql(query)
        assert err.value.status == 400 and err.value.field == "query" and words in err.value.error
    assert store_rows(workdir, "SELECT count(*) FROM images")[0][0] > 0


def test_search_by_image_id_and_text(api: AtelierClient, workdir: Path) -> None:
    image_id, _, _ = an_image(workdir)
    result = api.search(image_id=image_id, k=5)
    hits = result["images"]
    # the same answer as the index searched here (tiny CLIP vectors nearly tie, so compare ids)
    from evaluator.embedding.index import search_by_image_id
    from evaluator.workspace.workdir import Workdir

    sims, ids = search_by_image_id(Workdir.at(workdir, create=False), result["model"], image_id, k=5)
    assert [h["image_id"] for h in hits] == [int(i) for i in ids[0]]
    assert [h["similarity"] for h in hits] == pytest.approx([float(x) for x in sims[0]], abs=1e-5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and hits[0]["checkpoint"] in ("base", "ft-lora", "ft-weights")
    only = api.search(image_id=image_id, k=5, checkpoint="ft-lora")["images"]
    assert len(only) == 5 and {h["checkpoint"] for h in only} == {"ft-lora"}
    text = api.search(text="a painting in the style of someone", k=3)["images"]
    assert len(text) == 3 and all(isinstance(h["image_id"], int) for h in text)
    with pytest.raises(ApiClientError) as err:
        api.search(image_id=424242, k=3)
    assert err.value.status == 404 and err.value.field == "image_id"
    with pytest.raises(ApiClientError) as err:
        api.search(k=3)
    assert err.value.field == "text"


def test_limits_cors_off_and_openapi(api: AtelierClient, server: Server) -> None:
    big = httpx.post(server.url + "/sql", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert big.status_code == 413
    plain = httpx.get(server.url + "/health", headers={"Origin": CORS_ORIGIN})
    assert "access-control-allow-origin" not in plain.headers
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/health", "/comparisons", "/search", "/sql", "/images/{image_id}/file"} <= set(schema["paths"])


def test_busy_store_answers_503_then_recovers(api: AtelierClient, workdir: Path) -> None:
    writer = duckdb.connect(str(workdir / "atelier.duckdb"))  # a writer holds the file
    try:
        started = time.monotonic()
        with pytest.raises(ApiClientError) as err:
            api.scores(limit=1)
        assert err.value.status == 503 and err.value.retry_after is not None
        assert time.monotonic() - started < 10
    finally:
        writer.close()
    assert api.scores(limit=1)["items"]


def test_token_and_cors(workdir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    srv = Server(workdir, "--token-file", str(token_file), "--cors", CORS_ORIGIN)
    try:
        srv.wait_ready(headers={"Authorization": f"Bearer {TOKEN}"})
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for path in ("/health", "/openapi.json", "/images/1/file"):
                assert httpx.get(srv.url + path, headers=headers).status_code == 401
        with AtelierClient(srv.url, token=TOKEN) as client:
            assert client.health()["status"] == "ok"
        allowed = httpx.get(srv.url + "/health", headers={"Origin": CORS_ORIGIN, "Authorization": f"Bearer {TOKEN}"})
        assert allowed.headers["access-control-allow-origin"] == CORS_ORIGIN
        preflight = httpx.options(srv.url + "/sql", headers={
            "Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
    finally:
        code, log = srv.stop()
    assert code == 0, log


def test_refuses_a_public_bind_without_token(workdir: Path) -> None:
    result = subprocess.run([ATELIER, "serve", "--workdir", str(workdir), "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--token-file" in result.stderr
