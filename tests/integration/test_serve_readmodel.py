"""The server's read model answers exactly what the query functions answer, page by page.

On a small synthetic store (``evaluator.testing.synthetic_store``: the demo's tables and
conventions, non-ASCII names, errors, NULL verdicts) with a FAISS index of random vectors:
every comparison group in two orders and
each verdict, artist_scores under every filter, every image's search-hit row, at the
pagination edges (first row, last row, past the end); a part whose tables did not change
is taken over by the next snapshot's model and one whose table changed is read again;
and a real `atelier serve` answers from its read model (/health says so) with the same
rows as the queries.
"""

from __future__ import annotations

import json
import math
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

from evaluator.serve import readmodel
from evaluator.serve.jsonio import records_json
from evaluator.serve.reader import DirectReader
from evaluator.serve.search import hits_json
from evaluator.workspace import queries

pytestmark = pytest.mark.slow


def _rows(frame) -> list[dict]:
    return json.loads(records_json(frame).data)


def _same(got, want) -> bool:
    """Equal JSON values; numbers to 1e-12 relative or 1e-15 absolute (records_json rounds to 15
    decimals, DuckDB writes the shortest exact digits)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in got)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want, strict=True))
    if isinstance(got, float) or isinstance(want, float):
        return isinstance(got, int | float) and isinstance(want, int | float) and math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)
    return got == want


def _direct(store, query, limit: int, **kwargs) -> tuple[bytes, bool]:
    """The page as the server answers it without a read model (its own query, the same encoding)."""
    with readmodel.relations(store) as source:
        return readmodel.page_json(query(source, **kwargs, limit=limit + 1), limit)


def _edges(n: int) -> list[tuple[int, int]]:
    """(limit, offset) pairs at a table's edges: first row, last row, exactly all, past the end."""
    return sorted({(1, 0), (3, 0), (3, 3), (max(1, n - 1), 0), (max(1, n), 0), (n + 1, 0), (5, max(0, n - 2)),
                   (5, n), (5, n + 5)})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    import numpy as np

    from evaluator.embedding.index import update_index
    from evaluator.testing.synthetic_store import SyntheticStoreSpec, build_store
    from evaluator.workspace.workdir import Workdir

    root = tmp_path_factory.mktemp("readmodel") / "wd"
    spec = SyntheticStoreSpec(n_artists=40, n_templates=2, n_seeds=2, n_checkpoints=3, with_images=False)
    build_store(root, spec)
    con = duckdb.connect(str(root / "atelier.duckdb"), read_only=True)
    ids = np.asarray([r[0] for r in con.execute("SELECT image_id FROM images WHERE error IS NULL").fetchall()])
    con.close()
    vecs = np.random.default_rng(0).standard_normal((len(ids), 16)).astype(np.float32)
    update_index(Workdir.at(root, create=False), spec.model, embeddings=(ids.astype(np.int64), vecs))
    return root


@pytest.fixture(scope="module")
def store(workdir: Path):
    with DirectReader(workdir / "atelier.duckdb", 2.0) as reader:
        yield reader


@pytest.fixture(scope="module")
def model(store) -> readmodel.ReadModel:
    return readmodel.build(store)


def test_comparison_pages_equal_the_query(store, model: readmodel.ReadModel) -> None:
    pairs = queries.comparison_pairs(store)
    assert len(pairs) and len(model.comparisons) == len(pairs)
    checked = 0
    for base, finetune, name, metric in pairs.itertuples(index=False, name=None):
        for order, descending in (("delta", False), ("name", True)):
            group = model.comparison_group(store, base, finetune, name, metric, order, descending)
            for verdict in ("", "lost", "gained", "kept", "undecided"):
                total = len(queries.comparison_table(store, base, finetune, name, metric, verdict=verdict,
                                                     limit=10_000, offset=0))
                for limit, offset in _edges(total):
                    frame = queries.comparison_table(store, base, finetune, name, metric, verdict=verdict,
                                                     order=order, descending=descending, limit=limit + 1,
                                                     offset=offset)
                    items, more = group.page(verdict, limit, offset)
                    direct = _direct(store, queries.comparison_table, limit, base=base, finetune=finetune,
                                     model=name, metric=metric, verdict=verdict, order=order,
                                     descending=descending, offset=offset)
                    assert (items, more) == direct, (base, finetune, metric, verdict, limit, offset)
                    assert _same(json.loads(items), _rows(frame.head(limit)))
                    assert more == (len(frame) > limit)
                    checked += bool(len(frame))
    assert checked > 50  # pages with rows, not only empty ones


def test_a_bad_order_is_refused_as_by_the_query(store, model: readmodel.ReadModel) -> None:
    base, finetune, name, metric = queries.comparison_pairs(store).iloc[0]
    with pytest.raises(queries.InputError, match="order must be one of"):
        model.comparison_group(store, base, finetune, name, metric, "delta; DROP TABLE x", False)


def test_score_pages_equal_the_query(store, model: readmodel.ReadModel) -> None:
    every = queries.artist_scores(store, queries.ScoreFilter(), limit=1 << 30, offset=0)
    first = every.iloc[0]
    filters = [queries.ScoreFilter(), queries.ScoreFilter(model=first["model"]),
               queries.ScoreFilter(checkpoint=first["checkpoint"]), queries.ScoreFilter(artist_id=first["artist_id"]),
               queries.ScoreFilter(metric=first["metric"]),
               queries.ScoreFilter(checkpoint=first["checkpoint"], artist_id=first["artist_id"]),
               queries.ScoreFilter(model=first["model"], checkpoint=every.iloc[-1]["checkpoint"],
                                   artist_id=every.iloc[-1]["artist_id"], metric=every.iloc[-1]["metric"]),
               queries.ScoreFilter(artist_id="no-such-artist")]
    for filt in filters:
        total = len(queries.artist_scores(store, filt, limit=1 << 30, offset=0))
        for limit, offset in _edges(total):
            frame = queries.artist_scores(store, filt, limit=limit + 1, offset=offset)
            items, more = model.scores.page(filt, limit, offset)
            direct = _direct(store, queries.artist_scores, limit, filt=filt, offset=offset)
            assert (items, more) == direct, (filt, limit, offset)
            assert _same(json.loads(items), _rows(frame.head(limit)))
            assert more == (len(frame) > limit)


def test_search_hit_rows_equal_the_query(store, model: readmodel.ReadModel) -> None:
    ids = [int(i) for i in store.df("SELECT image_id FROM images ORDER BY image_id DESC")["image_id"]]
    assert len(model.images.ids) == len(ids)
    expected = _rows(queries.images_by_ids(store, ids).set_index("image_id").reset_index())
    by_id = {row.pop("image_id"): row for row in expected}
    fields = model.images.fields([*ids, 12345])
    assert fields[-1] is None  # not in the store
    for image_id, got in zip(ids, fields[:-1], strict=True):
        assert json.loads(b"{" + got + b"}") == by_id[image_id]
    hits = json.loads(hits_json([(0.5, ids[0]), (0.25, 12345)], model.images).data)
    assert hits[0] == {"rank": 1, "similarity": 0.5, "image_id": ids[0], **by_id[ids[0]],
                       "file_url": f"/images/{ids[0]}/file", "thumb_url": f"/images/{ids[0]}/thumb"}
    assert hits[1] == {"rank": 2, "similarity": 0.25, "image_id": 12345, "file_url": "/images/12345/file",
                       "thumb_url": "/images/12345/thumb"}


def test_the_image_rows_need_not_fit_in_duckdbs_memory(tmp_path: Path) -> None:
    """At 10M images the search-hit rows (2.3 GB) were sorted by DuckDB inside the snapshot's
    2 GB and the read model failed with out-of-memory: every request then queried the copy.
    Here 288k rows (70 MB) under a 40 MB limit are read whole and found by id."""
    from evaluator.testing.synthetic_store import SyntheticStoreSpec, build_store
    from evaluator.workspace.store import READ_ONLY_CONFIG

    build_store(tmp_path, SyntheticStoreSpec(n_artists=300, n_templates=4, n_seeds=4, n_checkpoints=60,
                                             with_images=False))
    limit_mb = 40
    con = duckdb.connect(str(tmp_path / "atelier.duckdb"), read_only=True,
                         config={**READ_ONLY_CONFIG, "memory_limit": f"{limit_mb}MB", "temp_directory": ""})
    try:
        source = readmodel.RelationReader(con.cursor(), tmp_path / "atelier.duckdb")
        hits = readmodel.ImageHits.read(source)
        assert hits.rows.nbytes > limit_mb * 2**20  # the rows did not fit in DuckDB's memory
        ids = [int(i) for i in con.execute("SELECT image_id FROM images USING SAMPLE 200 ROWS").fetchnumpy()["image_id"]]
        paths = dict(con.execute("SELECT image_id, path FROM images WHERE image_id IN (SELECT unnest(?))",
                                 [ids]).fetchall())
        n_images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    finally:
        con.close()
    assert len(hits.ids) == n_images > 280_000
    for image_id, row in zip(ids, hits.fields(ids), strict=True):
        assert json.loads(b"{" + row + b"}")["path"] == paths[image_id]


def test_unchanged_parts_are_taken_over_and_a_changed_one_is_read_again(workdir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "atelier.duckdb"
    shutil.copy(workdir / "atelier.duckdb", copy)
    with DirectReader(copy, 2.0) as reader:
        first = readmodel.build(reader)
        again = readmodel.build(reader, first)
    assert again.reused == ("comparisons", "scores", "images") and again.scores is first.scores
    con = duckdb.connect(str(copy))
    key = con.execute("SELECT checkpoint, artist_id, model, metric FROM artist_scores ORDER BY ALL LIMIT 1").fetchone()
    con.execute("UPDATE artist_scores SET value = 123.5 WHERE checkpoint = ? AND artist_id = ? AND model = ? "
                "AND metric = ?", list(key))
    con.close()
    with DirectReader(copy, 2.0) as reader:
        changed = readmodel.build(reader, again)
    assert changed.reused == ("comparisons", "images") and changed.comparisons is first.comparisons
    items, _ = changed.scores.page(queries.ScoreFilter(checkpoint=key[0], artist_id=key[1], model=key[2],
                                                       metric=key[3]), 10, 0)
    assert [row["value"] for row in json.loads(items)] == [123.5]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_server_answers_from_its_read_model(workdir: Path, store, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("atelier")), "serve", "--workdir",
                             str(workdir), "--port", str(port), "--snapshot-dir", str(tmp_path / "snap"),
                             "--rate-limit", "0"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        status = None
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                status = httpx.get(url + "/health", timeout=5).json()["snapshot"]["read_model"]
            except httpx.TransportError:
                pass
            if status:
                break
            time.sleep(0.2)
        assert status and status["image_rows"] > 0 and status["memory_mb"] > 0, log.read_text()
        base, finetune, name, metric = queries.comparison_pairs(store).iloc[0]
        got = httpx.get(url + "/comparisons", params={"finetune": finetune, "base": base, "model": name,
                                                      "metric": metric, "limit": 3, "offset": 1}).json()
        frame = queries.comparison_table(store, base, finetune, name, metric, descending=False, limit=4, offset=1)
        assert _same(got["items"], _rows(frame.head(3))) and got["next_offset"] == (4 if len(frame) > 3 else None)
        artist = frame.iloc[0]["artist_id"]
        got = httpx.get(url + "/scores", params={"artist_id": artist, "limit": 2}).json()
        frame = queries.artist_scores(store, queries.ScoreFilter(artist_id=artist), limit=3, offset=0)
        assert _same(got["items"], _rows(frame.head(2)))
        image_id = int(store.scalar("SELECT min(image_id) FROM images WHERE error IS NULL"))
        hits = httpx.post(url + "/search", json={"image_id": image_id, "k": 3}).json()["images"]
        rows = {r.pop("image_id"): r for r in _rows(queries.images_by_ids(store, [h["image_id"] for h in hits]))}
        assert hits and all({k: h[k] for k in rows[h["image_id"]]} == rows[h["image_id"]] for h in hits)
        # what the by-id shortcut does not answer reaches the route, body and all, with its own errors
        for body, status, field in (({"image_id": image_id, "k": 0}, 400, "k"),
                                    ({"image_id": 10**12, "k": 3}, 404, "image_id"),
                                    ({"image_id": image_id, "text": "x"}, 400, "text"),
                                    ({"image_id": image_id, "k": 3, "artist_id": "nobody-at-all"}, 400, "artist_id")):
            response = httpx.post(url + "/search", json=body)
            assert (response.status_code, response.json()["field"]) == (status, field), response.text
        artist = hits[0]["artist_id"]
        only = httpx.post(url + "/search", json={"image_id": image_id, "k": 3, "artist_id": artist}).json()["images"]
        assert only and {h["artist_id"] for h in only} == {artist}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
