"""Load on `atelier serve` over loopback: requests/s and p50/p99 latency per endpoint.

Builds (once) a synthetic store (``evaluator.testing.synthetic_store``, rows only) and a
FAISS index of random unit vectors for its images, starts `atelier serve` on a free
loopback port, and sends ``--requests`` requests per endpoint from ``--clients`` threads
(httpx), stopping early at ``--time-cap`` seconds: /comparisons, /scores and /search by
image id. Bounded in count and time; loopback only.

    python bench/bench_serve.py                                  # 64k images under /tmp
    python bench/bench_serve.py --artists 2000 --requests 2000 --clients 50

Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ensure_store(path: Path, args: argparse.Namespace) -> Path:
    """The synthetic store and an index of its images (random vectors: search cost, not quality)."""
    if (path / "atelier.duckdb").is_file():
        return path
    import duckdb
    import numpy as np

    from evaluator.embedding.index import update_index
    from evaluator.testing.synthetic_store import SyntheticStoreSpec, build_store
    from evaluator.workspace.workdir import Workdir

    t0 = time.perf_counter()
    spec = SyntheticStoreSpec(n_artists=args.artists, n_templates=4, n_seeds=4, n_checkpoints=4, with_images=False)
    build_store(path, spec)
    con = duckdb.connect(str(path / "atelier.duckdb"), read_only=True)
    ids = con.execute("SELECT image_id FROM images WHERE error IS NULL ORDER BY image_id").fetchnumpy()["image_id"]
    con.close()
    vecs = np.random.default_rng(0).standard_normal((len(ids), args.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    info = update_index(Workdir.at(path, create=False), spec.model, embeddings=(ids.astype(np.int64), vecs))
    print(f"built {path}: {len(ids)} images, {info.kind} index, {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("atelier")), "serve", "--workdir", str(workdir),
                             "--port", str(port), "--log-level", "warning"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def load(url: str, make_request, n: int, clients: int, time_cap: float) -> dict:
    """``n`` requests from ``clients`` threads (or until ``time_cap`` s): rate, latencies, errors."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [n]
    stop_at = time.monotonic() + time_cap

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                method, path, kwargs = make_request(rng)
                t0 = time.perf_counter()
                response = http.request(method, path, **kwargs)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:120]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else float("nan")

    return {"requests": len(latencies), "seconds": round(wall, 2), "req_per_s": round(len(latencies) / wall, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": round(1000 * statistics.fmean(latencies), 1),
            "errors": len(errors), "first_errors": errors[:3]}


def request_makers(url: str) -> dict:
    """One request generator per endpoint, drawing names and ids from the store via the API."""
    import httpx

    with httpx.Client(base_url=url) as http:
        finetunes = sorted({c["checkpoint"] for c in http.get("/checkpoints").json()["items"] if c["base"]})
        artists = [r["artist_id"] for r in http.post("/sql", json={
            "query": "SELECT DISTINCT artist_id FROM artist_scores LIMIT 500"}).json()["rows"]]
        image_ids = [r["image_id"] for r in http.post("/sql", json={
            "query": "SELECT image_id FROM images WHERE error IS NULL USING SAMPLE 500 ROWS"}).json()["rows"]]
    return {
        "comparisons": lambda rng: ("GET", "/comparisons", {"params": {
            "finetune": rng.choice(finetunes), "metric": "artist_similarity", "verdict": "lost", "limit": 50}}),
        "scores": lambda rng: ("GET", "/scores", {"params": {"artist_id": rng.choice(artists), "limit": 100}}),
        "search_image_id": lambda rng: ("POST", "/search", {"json": {"image_id": rng.choice(image_ids), "k": 10}}),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--artists", type=int, default=1000, help="images = artists x 4 templates x 4 seeds x 4 checkpoints")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000, help="per endpoint")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--time-cap", type=float, default=60.0, help="seconds per endpoint at most")
    args = parser.parse_args(argv)
    workdir = ensure_store(args.workdir or Path(f"/tmp/bench_serve_{args.artists}"), args)
    proc, url = start_server(workdir)
    try:
        makers = request_makers(url)
        results = {}
        for name, maker in makers.items():
            load(url, maker, min(50, args.requests), min(4, args.clients), args.time_cap)  # warm up
            results[name] = load(url, maker, args.requests, args.clients, args.time_cap)
            print(f"{name:16} {json.dumps(results[name])}", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    out = {"store": str(workdir), "artists": args.artists, "clients": args.clients, "server_exit": code,
           "machine": platform.platform(), "results": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serve.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
