"""FAISS query time at 1M vectors: exact inner product vs IVF, with recall@10.

The index types are the ones ``evaluator.embedding.index`` builds (``IndexIDMap2`` over
``IndexFlatIP``, or over ``IndexIVFFlat`` with nlist = sqrt(N), trained on a 100k
sample, direct map for reconstruct by id), filled with synthetic clustered unit
vectors (CLIP-like: 2,000 clusters in dim 512) and queried with held-out vectors.
Recall@10 of IVF is measured against the exact index, for several nprobe values.

    python bench/bench_faiss.py [--n 1000000] [--dim 512] [--queries 200]

Writes bench/results/faiss.json. 1M x 512 float32 is 2 GB per copy; the script keeps
the vectors, the flat index and the IVF index in memory at once (~6 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_vectors(n: int, dim: int, clusters: int, seed: int, noise: float = 2.0):
    """Unit vectors around fixed cluster centres (seed 0); ``seed`` draws the members."""
    import numpy as np

    centers = np.random.default_rng(0).standard_normal((clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        block = centers[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[s : s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def time_search(index, queries, k: int, repeat: int = 3):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=2.0, help="spread around centres: 2.0 gives cos to centre ~0.45, so neighbours straddle IVF cells")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128, 256])
    args = parser.parse_args()

    import faiss
    import numpy as np

    from evaluator.embedding.index import IndexConfig, _ivf_of, _new_ivf

    t0 = time.perf_counter()
    vecs = make_vectors(args.n, args.dim, args.clusters, seed=1, noise=args.noise)
    queries = make_vectors(args.queries, args.dim, args.clusters, seed=2, noise=args.noise)  # held out, same centres
    ids = np.arange(args.n, dtype=np.int64) * 2 + 1
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dim))
    flat.add_with_ids(vecs, ids)
    flat_build = time.perf_counter() - t0
    flat_s, (_, exact) = time_search(flat, queries, 10)

    t0 = time.perf_counter()
    ivf, nlist = _new_ivf(vecs, IndexConfig(nprobe=args.nprobe[0]))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf.add_with_ids(vecs, ids)
    add_s = time.perf_counter() - t0
    inner = _ivf_of(ivf)
    rows = []
    for nprobe in args.nprobe:
        inner.nprobe = nprobe
        s, (_, found) = time_search(ivf, queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), found.tolist(), strict=True)])
        rows.append({
            "nprobe": nprobe,
            "ms_per_query": round(1000 * s / len(queries), 3),
            "recall_at_10": round(float(recall), 4),
            "speedup_vs_exact": round(flat_s / s, 2),
        })
    # what `atelier index build` does: raise nprobe until recall@10 >= target on a sample
    from evaluator.embedding.index import tune_nprobe

    cfg = IndexConfig()
    t0 = time.perf_counter()
    tuned_nprobe, tuned_recall_sample = tune_nprobe(ivf, vecs, ids, cfg)
    tune_s = time.perf_counter() - t0
    inner.nprobe = tuned_nprobe
    s, (_, found) = time_search(ivf, queries, 10)
    tuned = {
        "nprobe": tuned_nprobe,
        "target_recall": cfg.target_recall,
        "recall_at_10_on_sample": round(tuned_recall_sample, 4),
        "recall_at_10_held_out": round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), found.tolist(), strict=True)])), 4),
        "ms_per_query": round(1000 * s / len(queries), 3),
        "speedup_vs_exact": round(flat_s / s, 2),
        "tune_seconds": round(tune_s, 2),
    }
    result = {
        "name": "faiss",
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "data": f"synthetic clustered unit vectors ({args.clusters} clusters, noise {args.noise}), held-out queries",
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "generate_seconds": round(gen_s, 2),
        "exact": {"build_seconds": round(flat_build, 2), "ms_per_query": round(1000 * flat_s / len(queries), 3)},
        "ivf": {"nlist": nlist, "train_seconds": round(train_s, 2), "add_seconds": round(add_s, 2), "by_nprobe": rows, "tuned": tuned},
        "default_nprobe": IndexConfig().nprobe,
    }
    out = REPO / "bench" / "results" / "faiss.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
