"""`atelier serve` as a real uvicorn process on a free loopback port, over a demo store.

Every endpoint through ``evaluator.serve.client``; the token (through two workers); SQL
writes and file reads refused; a stored path escaping the workdir refused; names checked
with suggestions; search by an uploaded image and its limits (bytes, pixels, bombs, bad
files); ``kind``; the rate limit (429) and the request time limit (503); the last
committed state while a writer holds the store (503 + Retry-After without a snapshot);
clean exit on SIGTERM. ``test_serve_concurrent`` runs a real `atelier score` beside it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
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
        self.snapshots = workdir.parent / f"snapshots-{self.port}"
        if "--no-snapshot" not in extra:
            extra = ("--snapshot-dir", str(self.snapshots), *extra)
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
    # the first text or image query waits for the CLIP model, then says 503 + Retry-After
    with AtelierClient(server.url, retry_for=120) as client:
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


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels and holds almost none (a bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_search_by_uploaded_image(api: AtelierClient, workdir: Path) -> None:
    _, path, _ = an_image(workdir)
    data = (workdir / path).read_bytes()
    result = api.search_image(data, k=5)
    # the same answer as `atelier search --image` computes here, on the same model and index
    from evaluator.embedding.clip import load_clip
    from evaluator.embedding.index import search_by_image_file
    from evaluator.workspace.workdir import Workdir

    clip = load_clip(str(workdir / "models" / "clip"), None, "cpu")
    sims, ids = search_by_image_file(Workdir.at(workdir, create=False), clip, workdir / path, k=5)
    assert [h["image_id"] for h in result["images"]] == [int(i) for i in ids[0]]
    assert [h["similarity"] for h in result["images"]] == pytest.approx([float(x) for x in sims[0]], abs=1e-4)
    # an indexed image as the query: the best hit is at least as close as the image itself (the
    # tiny random CLIP puts many images within float16 rounding of it, so its own rank may vary)
    assert result["images"][0]["similarity"] >= 0.999
    only = api.search_image(data, k=3, checkpoint="ft-lora")["images"]
    assert len(only) == 3 and {h["checkpoint"] for h in only} == {"ft-lora"}


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"", 400, "empty"),
    (b"plain text, not an image", 415, "not an image"),
    ("truncated", 400, "truncated"),
    (png_header_only(7000, 7000), 413, "49,000,000 pixels"),  # over the 40 Mpx limit, under Pillow's
    (png_header_only(60000, 60000), 413, "decompression bomb"),  # over Pillow's own bomb limit
])
def test_upload_limits(api: AtelierClient, workdir: Path, body, status: int, words: str) -> None:
    if body == "truncated":
        full = (workdir / an_image(workdir)[1]).read_bytes()
        body = full[: len(full) // 2]
    with pytest.raises(ApiClientError) as err:
        api.search_image(body)
    assert err.value.status == status and err.value.field == "image" and words in err.value.error


def test_upload_fields_and_body_limit(api: AtelierClient, server: Server) -> None:
    wrong = httpx.post(server.url + "/search", files={"imag": ("q.png", b"x")})
    assert wrong.status_code == 400 and wrong.json()["field"] == "imag" and wrong.json()["suggestions"] == ["image"]
    no_file = httpx.post(server.url + "/search", files={"k": (None, "3")})
    assert no_file.status_code == 400 and no_file.json()["field"] == "image"
    huge = httpx.post(server.url + "/search", files={"image": ("q.png", b"\0" * (21 << 20))})
    assert huge.status_code == 413 and "upload" in huge.json()["error"]
    bad_k = httpx.post(server.url + "/search", files={"image": ("q.png", b"x")}, data={"k": "ten"})
    assert bad_k.status_code == 400 and bad_k.json()["field"] == "k" and "ten" in bad_k.json()["error"]


def test_artists_kind(api: AtelierClient, workdir: Path) -> None:
    columns = [r[0] for r in store_rows(workdir, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'artists'")]
    if "kind" not in columns:  # a store from before kinds: a clear 400, never all rows
        with pytest.raises(ApiClientError) as err:
            api.artists(kind="artist")
        assert err.value.status == 400 and err.value.field == "kind" and "no artist kinds" in err.value.error
        return
    expected = store_rows(workdir, "SELECT count(*) FROM artists WHERE coalesce(nullif(kind, ''), 'artist') = 'artist'")
    assert len(list(api.pages("/artists", kind="artist", limit=1000))) == expected[0][0]
    with pytest.raises(ApiClientError) as err:
        api.artists(kind="charcter")
    assert err.value.field == "kind" and err.value.suggestions == ["character"]


def test_writer_holding_the_store_gets_the_last_committed_state(api: AtelierClient, workdir: Path) -> None:
    before = api.scores(limit=5)
    writer = duckdb.connect(str(workdir / "atelier.duckdb"))  # a writer holds the file
    try:
        writer.execute("INSERT INTO artists (artist_id, name) VALUES ('zz-later', 'Zz Later')")
        for _ in range(5):  # stale but consistent: the state before the writer, not an error
            assert api.scores(limit=5) == before
            assert api.artists(q="zz later")["items"] == []
        assert api.health()["snapshot"]["stale"] is True
    finally:
        writer.close()
    give_up = time.monotonic() + 60  # the next snapshot is copied once the writer has let go
    while not api.artists(q="zz later")["items"]:
        assert time.monotonic() < give_up, "the server never showed the committed row"
        time.sleep(0.5)
    assert api.health()["snapshot"]["stale"] is False


def test_without_snapshot_a_held_store_answers_503_then_recovers(workdir: Path) -> None:
    srv = Server(workdir, "--no-snapshot", "--lock-wait", "0.5")
    try:
        srv.wait_ready()
        with AtelierClient(srv.url) as client:
            writer = duckdb.connect(str(workdir / "atelier.duckdb"))
            try:
                with pytest.raises(ApiClientError) as err:
                    client.scores(limit=1)
                assert err.value.status == 503 and err.value.retry_after == "1"
            finally:
                writer.close()
            assert client.scores(limit=1)["items"]
    finally:
        code, log = srv.stop()
    assert code == 0, log


def test_rate_limit_per_client(workdir: Path) -> None:
    srv = Server(workdir, "--rate-limit", "0.01", "--rate-burst", "3")  # 3 at once, then one per 100 s
    try:
        srv.wait_ready()  # /health polls may have spent some of the burst
        answers = [httpx.get(srv.url + "/checkpoints") for _ in range(4)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused and all(a.status_code == 200 for a in answers[: answers.index(refused[0])])
        body = refused[0].json()
        assert "a second" in body["error"] and int(refused[0].headers["retry-after"]) >= 1
    finally:
        code, log = srv.stop()
    assert code == 0, log


def test_request_time_limit_answers_503_and_the_server_stays_up(workdir: Path) -> None:
    srv = Server(workdir, "--request-timeout", "8")  # user SQL needs its child process to start
    slow_sql = "SELECT sum(a.range * b.range) FROM range(200000) a, range(200000) b"  # minutes of work
    try:
        srv.wait_ready()
        answers: dict = {}
        slow = threading.Thread(target=lambda: answers.update(
            slow=httpx.post(srv.url + "/sql", json={"query": slow_sql}, timeout=60)))
        slow.start()
        health = httpx.get(srv.url + "/health", timeout=30)  # answered while the slow one runs
        slow.join(timeout=90)
        assert health.status_code == 200
        assert answers["slow"].status_code == 503 and "time limit" in answers["slow"].json()["error"]
        assert int(answers["slow"].headers["retry-after"]) >= 1
        give_up = time.monotonic() + 60  # the query's process stops itself a second after the deadline
        while (fast := httpx.post(srv.url + "/sql", json={"query": "SELECT 42 AS x"}, timeout=30)).status_code != 200:
            assert time.monotonic() < give_up, fast.text
            time.sleep(0.5)
        assert fast.json()["rows"] == [{"x": 42}]
    finally:
        code, log = srv.stop()
    assert code == 0, log


def test_token_and_cors(workdir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    # two workers: the token and the CORS origin reach both through ATELIER_SERVE_CONFIG
    srv = Server(workdir, "--token-file", str(token_file), "--cors", CORS_ORIGIN, "--workers", "2")
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
        with AtelierClient(srv.url, token=TOKEN) as client:  # no --model: an upload says what is missing
            with pytest.raises(ApiClientError) as err:
                client.search_image(b"x")
            assert err.value.field == "image" and "--model" in err.value.error
    finally:
        code, log = srv.stop()
    assert code == 0, log
    assert not list(srv.snapshots.glob("*.duckdb")), "the workers left snapshots behind"


def test_refuses_a_public_bind_without_token(workdir: Path) -> None:
    result = subprocess.run([ATELIER, "serve", "--workdir", str(workdir), "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--token-file" in result.stderr
