"""Load on `atelier serve` over loopback: requests/s and p50/p99 latency per endpoint, before vs after.

Builds (once) a synthetic store (``evaluator.testing.synthetic_store``, rows only) and a
FAISS index of random unit vectors for its images, starts `atelier serve` on a free
loopback port, and sends ``--requests`` requests per endpoint from each ``--clients``
count of clients (keep-alive HTTP/1.1 connections of one uvloop event loop, closed loop:
each client sends its next request when the last one is answered), stopping early at ``--time-cap`` seconds: /comparisons, /scores and
/search by image id. Then the same while a writer process commits to the store every
``--write-every`` seconds (as `atelier score` does at the end of a run), counting how
long each commit waited for the store; under the writer each endpoint runs for
``--writer-seconds``. Bounded in count and time; loopback only.

``--baseline-src DIR`` runs a second server from an older source tree (e.g. ``git archive
<rev> evaluator catalog dashboard | tar -x -C DIR``) in the same run, and reports the
ratios baseline / current.

    python bench/bench_serve.py                                   # 64k images under /tmp
    python bench/bench_serve.py --artists 9000 --checkpoints 7 --clients 1,50 \\
        --baseline-src /tmp/serve_before                          # the 1M-image store

Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENDPOINTS = ("comparisons", "scores", "search_image_id")
WRITER_REQUESTS_CAP = 200_000  # under the writer each endpoint runs for its seconds, at most this many requests


def ensure_store(path: Path, args: argparse.Namespace) -> Path:
    """The synthetic store (rows only) and a FAISS index of its images, each built once."""
    from evaluator.testing.synthetic_store import SyntheticStoreSpec, build_store

    spec = SyntheticStoreSpec(n_artists=args.artists, n_templates=4, n_seeds=4, n_checkpoints=args.checkpoints,
                              with_images=False)
    if not (path / "atelier.duckdb").is_file():
        t0 = time.perf_counter()
        build_store(path, spec)
        print(f"built {path}: {time.perf_counter() - t0:.0f} s", flush=True)
    if not (path / "index").is_dir() or not any((path / "index").glob("*.faiss")):
        build_index(path, spec.model, args.dim)
    return path


def build_index(path: Path, model: str, dim: int) -> None:
    """An index of clustered unit vectors: each artist a random centre, its images around it.

    CLIP embeddings of one artist's images sit together; uniform random vectors would be
    the worst case of an IVF index (recall 0.95 needed 512 of 1,001 lists), not the usual one.
    """
    import duckdb
    import numpy as np

    from evaluator.embedding.index import update_index
    from evaluator.workspace.workdir import Workdir

    t0 = time.perf_counter()
    con = duckdb.connect(str(path / "atelier.duckdb"), read_only=True)
    rows = con.execute("SELECT image_id, artist_id FROM images WHERE error IS NULL ORDER BY image_id").fetchnumpy()
    con.close()
    ids = rows["image_id"].astype(np.int64)
    _, artist_index = np.unique(rows["artist_id"].astype(str), return_inverse=True)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((int(artist_index.max()) + 1, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vecs = centres[artist_index] + rng.standard_normal((len(ids), dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    info = update_index(Workdir.at(path, create=False), model, embeddings=(ids, vecs))
    print(f"indexed {path}: {len(ids)} images, {info.kind} index (nprobe {info.nprobe}, recall@10 "
          f"{info.recall_at_10}), {time.perf_counter() - t0:.0f} s", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workdir: Path, baseline_src: Path | None = None, workers: int | None = None) -> tuple[subprocess.Popen, str]:
    """`atelier serve` on a free port: this tree, or ``baseline_src`` first on the path (its own options).

    The current server is ready when its read model is built (/health says so), so the
    figures are those of a server answering from it, not from its queries meanwhile.
    """
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the entry script, not `-m` (which would put the current directory, this tree, first on the path)
    cmd = [str(Path(sys.executable).with_name("atelier")), "serve", "--workdir", str(workdir), "--port", str(port),
           "--log-level", "warning"]
    env = dict(os.environ)
    if baseline_src is not None:
        env["PYTHONPATH"] = str(baseline_src)
    help_text = subprocess.run([*cmd[:2], "--help"], env=env, capture_output=True, text=True).stdout
    if "--rate-limit" in help_text:  # every bench client is 127.0.0.1: one "client" to the limiter
        cmd += ["--rate-limit", "0"]
    if workers:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir)
    deadline, ready = time.monotonic() + 600, 0
    while time.monotonic() < deadline:
        try:  # a new connection each time: with --workers, any worker may answer; each must be ready
            response = httpx.get(url + "/health", timeout=10)
            snapshot = (response.json().get("snapshot") or {}) if response.status_code == 200 else None
            up = snapshot is not None and (baseline_src is not None or "read_model" not in snapshot
                                           or bool(snapshot["read_model"] or snapshot.get("read_model_error")))
            ready = ready + 1 if up else 0
            if ready >= (8 if workers and workers > 1 else 1):
                return proc, url
        except httpx.TransportError:
            ready = 0
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def summarize(latencies: list[float], errors: list[str], wall: float) -> dict:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else float("nan")

    return {"requests": len(latencies), "seconds": round(wall, 2), "req_per_s": round(len(latencies) / wall, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
            "errors": len(errors), "first_errors": errors[:3]}


def request_bytes(method: str, path: str, kwargs: dict, host: str) -> bytes:
    """One HTTP/1.1 keep-alive request, as ``make_request`` describes it (query params or a JSON body)."""
    from urllib.parse import urlencode

    if kwargs.get("params"):
        path += "?" + urlencode(kwargs["params"])
    body = json.dumps(kwargs["json"]).encode() if "json" in kwargs else b""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def exchange(reader, writer, request: bytes) -> tuple[int, bytes, bytes]:
    """Send one request on a keep-alive connection; (status, lower-cased head, body)."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("the response has no Content-Length")
    length = int(head[at + 17:head.index(b"\r\n", at + 2)])
    return int(head[9:12]), head, await reader.readexactly(length)


def load(url: str, make_request, n: int, clients: int, time_cap: float) -> dict:
    """``n`` requests from ``clients`` clients (or until ``time_cap`` s): rate, latencies, errors.

    The clients are tasks of one uvloop event loop, each with its own keep-alive connection,
    speaking HTTP/1.1 over raw streams (as wrk does): the generator shares the server's two
    cores, and httpx's client cost ~3 ms of CPU a request, so with it 50 clients measured the
    generator (300 req/s, p99 1.3 s against a server answering 3,000 req/s to this one).
    """
    import asyncio

    import uvloop

    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    hits: list[float] = []  # answered from the server's per-snapshot memory (X-Cache: hit)
    misses: list[float] = []
    errors: list[str] = []
    remaining = [n]

    async def client(seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < stop_at and remaining[0] > 0:
                remaining[0] -= 1
                request = request_bytes(*make_request(rng), host=host)
                t0 = time.perf_counter()
                try:
                    status, head, body = await exchange(reader, writer, request)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"0 {type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                elapsed = time.perf_counter() - t0
                latencies.append(elapsed)
                (hits if b"\r\nx-cache: hit" in head else misses).append(elapsed)
                if status != 200:
                    errors.append(f"{status} {body[:120].decode('utf-8', 'replace')}")
        finally:
            writer.close()

    async def run_all() -> None:
        stop_at = time.monotonic() + time_cap
        await asyncio.gather(*(client(i, stop_at) for i in range(clients)))

    started = time.perf_counter()
    uvloop.run(run_all())
    result = summarize(latencies, errors, time.perf_counter() - started)
    if hits:  # the computed answers and the remembered ones, apart
        result["remembered"] = len(hits)
        result["computed_p50_ms"] = summarize(misses, [], 1.0)["p50_ms"]
        result["computed_p99_ms"] = summarize(misses, [], 1.0)["p99_ms"]
        result["remembered_p99_ms"] = summarize(hits, [], 1.0)["p99_ms"]
    return result


def request_makers(url: str) -> dict:
    """One request generator per endpoint, drawing names and ids from the store via the API."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        finetunes = sorted({c["checkpoint"] for c in http.get("/checkpoints").json()["items"] if c["base"]})
        # many distinct questions, so most answers are computed, not remembered (X-Cache says which)
        artists = [r["artist_id"] for r in http.post("/sql", json={
            "query": "SELECT DISTINCT artist_id FROM artist_scores"}).json()["rows"]]
        image_ids = [r["image_id"] for r in http.post("/sql", json={
            "query": "SELECT image_id FROM images WHERE error IS NULL USING SAMPLE 5000 ROWS"}).json()["rows"]]
    return {
        "comparisons": lambda rng: ("GET", "/comparisons", {"params": {
            "finetune": rng.choice(finetunes), "metric": "artist_similarity",
            "verdict": rng.choice(["lost", "gained", "kept", ""]), "offset": 50 * rng.randrange(20), "limit": 50}}),
        "scores": lambda rng: ("GET", "/scores", {"params": {"artist_id": rng.choice(artists), "limit": 100}}),
        "search_image_id": lambda rng: ("POST", "/search", {"json": {"image_id": rng.choice(image_ids), "k": 10}}),
    }


def writer_loop(store: str, every: float, seconds: float) -> None:
    """A writer (run as a child process): commit one small change every ``every`` s; print how
    long each open took and how often the store's lock refused it (the rest is CPU)."""
    import duckdb

    from evaluator.workspace.store import LOCK_MARKERS, transaction

    waits, refusals, stop_at = [], 0, time.monotonic() + seconds
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        while True:
            try:
                con = duckdb.connect(store)
                break
            except duckdb.IOException as exc:
                if not any(marker in str(exc) for marker in LOCK_MARKERS) or time.perf_counter() - t0 > 60:
                    raise
                refusals += 1
                time.sleep(0.02)
        waits.append(time.perf_counter() - t0)
        with transaction(con):
            con.execute("UPDATE runs SET message = ? WHERE run_id = (SELECT min(run_id) FROM runs)",
                        [f"bench write {time.time():.3f}"])
        con.close()
        time.sleep(every)
    print(json.dumps({"commits": len(waits), "lock_refusals": refusals,
                      "open_mean_ms": round(1000 * statistics.fmean(waits), 1) if waits else None,
                      "open_max_ms": round(1000 * max(waits), 1) if waits else None}), flush=True)


def run_variant(workdir: Path, args: argparse.Namespace, baseline_src: Path | None) -> dict:
    """Every endpoint at every client count, then under a writer; one server."""
    proc, url = start_server(workdir, baseline_src, args.workers)
    results: dict = {"load_average_at_start": os.getloadavg()}
    try:
        import httpx

        results["snapshot"] = httpx.get(url + "/health", timeout=30).json().get("snapshot")
        if (results["snapshot"] or {}).get("read_model_error"):  # every answer then queries the copy: say so
            print(f"  warning: the server has no read model: {results['snapshot']['read_model_error'][:200]}",
                  flush=True)
        makers = request_makers(url)
        for clients in args.clients:
            for name in ENDPOINTS:
                load(url, makers[name], min(50, args.requests), min(4, clients), args.time_cap)  # warm up
                results[f"{name}@{clients}"] = load(url, makers[name], args.requests, clients, args.time_cap)
                print(f"  {name + '@' + str(clients):22} {json.dumps(results[f'{name}@{clients}'])}", flush=True)
        if args.write_every > 0:
            results["under_writer"] = under_writer(workdir, url, makers, args)
        results["load_average_at_end"] = os.getloadavg()
    finally:
        results["server_exit"] = stop_server(proc)
    return results


def under_writer(workdir: Path, url: str, makers: dict, args: argparse.Namespace) -> dict:
    """Each endpoint for ``--writer-seconds`` while the writer commits: long enough to hold
    several snapshot copies (a copy of the 1M store takes 2-3 s and the next waits 4x as
    long), so the p99 is a share of the copies' time and not one copy landing or not in a
    burst of ``--requests`` (3,000 took ~1.3 s: p99 27-96 ms from run to run)."""
    import httpx

    clients = max(args.clients)
    span = args.writer_seconds * len(ENDPOINTS) + 5
    writer = subprocess.Popen([sys.executable, __file__, "--writer", str(workdir / "atelier.duckdb"),
                               str(args.write_every), str(span)], stdout=subprocess.PIPE, text=True)
    out = {}
    try:
        for name in ENDPOINTS:
            out[f"{name}@{clients}"] = load(url, makers[name], WRITER_REQUESTS_CAP, clients, args.writer_seconds)
            print(f"  writer: {name + '@' + str(clients):14} {json.dumps(out[f'{name}@{clients}'])}", flush=True)
    finally:
        stdout, _ = writer.communicate(timeout=span + 60)
    out["writer"] = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    out["snapshot_after"] = httpx.get(url + "/health", timeout=30).json().get("snapshot")
    print(f"  writer: {out['writer']}", flush=True)
    return out


def ratios(before: dict, after: dict) -> dict:
    """baseline / current for each measured figure (> 1: the current server is faster)."""
    out = {}
    for key, new in after.items():
        old = before.get(key)
        if not (isinstance(new, dict) and isinstance(old, dict) and "p99_ms" in new):
            continue
        out[key] = {"p50": round(old["p50_ms"] / max(new["p50_ms"], 0.1), 2),
                    "p99": round(old["p99_ms"] / max(new["p99_ms"], 0.1), 2),
                    "req_per_s": round(new["req_per_s"] / max(old["req_per_s"], 0.1), 2)}
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--writer"]:
        writer_loop(argv[1], float(argv[2]), float(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--artists", type=int, default=1000,
                        help="images = artists x 4 templates x 4 seeds x --checkpoints (9000 x 7: the 1M-image store)")
    parser.add_argument("--checkpoints", type=int, default=4, help="checkpoints, the base included")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000, help="per endpoint and client count")
    parser.add_argument("--clients", type=lambda text: [int(x) for x in text.split(",")], default=[16],
                        help="comma-separated client counts, e.g. 1,50")
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per endpoint and client count at most")
    parser.add_argument("--write-every", type=float, default=2.0, help="seconds between a writer's commits (0: skip)")
    parser.add_argument("--writer-seconds", type=float, default=12.0, help="seconds of load per endpoint under the writer")
    parser.add_argument("--baseline-src", type=Path, default=None, help="an older source tree to compare with")
    parser.add_argument("--workers", type=int, default=None, help="both servers' --workers (default: their own)")
    args = parser.parse_args(argv)
    workdir = ensure_store(args.workdir or Path(f"/tmp/bench_serve_{args.artists}x{args.checkpoints}"), args)
    variants = {}
    if args.write_every > 0:  # how long a writer's open takes with no server at all: its own cost
        alone = subprocess.run([sys.executable, __file__, "--writer", str(workdir / "atelier.duckdb"),
                                str(args.write_every), str(args.time_cap)], capture_output=True, text=True)
        variants["writer_alone"] = json.loads(alone.stdout.strip().splitlines()[-1])
        print(f"writer alone: {variants['writer_alone']}", flush=True)
    for label, src in (("baseline", args.baseline_src), ("current", None)):
        if label == "baseline" and src is None:
            continue
        print(f"{label}:", flush=True)
        variants[label] = run_variant(workdir, args, src)
    out = {"store": str(workdir), "artists": args.artists, "checkpoints": args.checkpoints, "clients": args.clients,
           "requests": args.requests, "time_cap": args.time_cap, "machine": platform.platform(),
           "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "variants": variants}
    if "baseline" in variants:
        out["ratios_baseline_over_current"] = ratios(variants["baseline"], variants["current"])
        out["ratios_baseline_over_current"]["under_writer"] = ratios(
            variants["baseline"].get("under_writer", {}), variants["current"].get("under_writer", {}))
        print(json.dumps(out["ratios_baseline_over_current"], indent=1), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serve.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
