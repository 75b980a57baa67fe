"""FAISS: the index atelier builds past its exact threshold vs exact search, same run.

Data (the headline): synthetic clustered unit vectors whose neighbourhoods overlap, in
two levels — ``--super`` super-clusters of ``--sub`` sibling clusters each; a sibling
centre is the super-centre plus Gaussian noise of norm ``--sub-spread`` (cos ~0.92 to
it at 0.3), a vector is its centre plus noise of norm ``--noise`` (cos ~0.71 at 1.0).
With the defaults a held-out query's 10 exact neighbours are ~70% in its own cluster
and the rest in sibling clusters (the run reports both shares), so a query's
neighbourhood straddles IVF cells as real CLIP neighbourhoods do. Queries are held out:
drawn from the same distribution with another seed, never indexed.

Uniform random unit vectors are the worst case and are reported under ``"uniform"``:
in 512 dimensions every vector is nearly orthogonal to every other, there is no
structure for any approximate index to exploit, and recall at a useful speed-up is low.

The index is the one ``evaluator.embedding.index`` builds (``_new_ivf``: ~4·sqrt(N)
lists capped by the training sample, an HNSW32 coarse quantizer, spherical k-means),
tuned by ``tune_nprobe`` on leave-one-out samples of the indexed vectors as
``atelier index build`` does, then measured on the held-out queries:
- single: queries searched one at a time (an interactive search), exact vs IVF;
- batch: ``--queries`` queries in one call (exact batched search is a BLAS matmul,
  the harder baseline), exact vs IVF.
With ``--autofaiss`` (if importable) autofaiss builds an index under a memory budget on
the same vectors and is measured the same way.

    python bench/bench_faiss.py [--n 300000] [--dim 512] [--queries 1000] [--json OUT] [--autofaiss]

``--index-memory 2GB`` also builds the budget's choice; ``--budget-only`` builds only that
(at 10M vectors the default IVF-Flat's lists are as large as the vectors, and both would
not fit in memory together), recorded under ``"index_memory"`` as in a full run.

Writes bench/results/faiss.json (or OUT). Memory: the vectors, the exact and the IVF
index at once: ~3 copies of n x dim float32 (1.8 GB at 300k x 512).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _unit(x):
    import numpy as np

    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, args: argparse.Namespace, seed: int):
    """(unit vectors [n, dim], cluster label [n]); centres fixed by seed 0, members by ``seed``."""
    import numpy as np

    dim = args.dim
    r0 = np.random.default_rng(0)
    supers = _unit(r0.standard_normal((args.super, dim), dtype=np.float32))
    centres = np.repeat(supers, args.sub, axis=0) + args.sub_spread * r0.standard_normal((args.super * args.sub, dim), dtype=np.float32) / np.sqrt(dim)
    centres = _unit(centres).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        out[s : s + m] = _unit(centres[labels[s : s + m]] + args.noise * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim))
    return out, labels


def uniform_vectors(n: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal((n, dim), dtype=np.float32)).astype(np.float32)


def best_of(fn, repeat: int = 3) -> float:
    from evaluator.embedding.index_exact import best_seconds

    return best_seconds(fn, repeat)


def speed(index, queries, n_single: int) -> dict:
    """Seconds per query: one at a time over ``n_single`` queries (on one thread: on this
    shared 2-core machine OpenMP's fork/join per single query, with the other core busy,
    made the same nprobe measure 4x and 48x in one run), and all queries in one call
    (every thread)."""
    import faiss

    single = queries[:n_single]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        one = best_of(lambda: [index.search(single[i : i + 1], 10) for i in range(len(single))]) / len(single)
    finally:
        faiss.omp_set_num_threads(threads)
    batch = best_of(lambda: index.search(queries, 10)) / len(queries)
    return {"single": one, "batch": batch}


def recall_at_10(found, exact) -> float:
    import numpy as np

    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.tolist(), found.tolist(), strict=True)]))


def versus_exact(index, queries, exact_ids, exact_speed: dict, n_single: int) -> dict:
    own = speed(index, queries, n_single)
    _, found = index.search(queries, 10)
    return {
        "recall_at_10": round(recall_at_10(found, exact_ids), 4),
        "ms_per_query_single": round(1000 * own["single"], 3),
        "ms_per_query_batch": round(1000 * own["batch"], 4),
        "speedup_single": round(exact_speed["single"] / own["single"], 1),
        "speedup_batch": round(exact_speed["batch"] / own["batch"], 2),
    }


def exact_baseline(vecs, ids, queries, n_single: int) -> tuple[dict, object]:
    """The exact index a user gets below the threshold, its speed and the true neighbours."""
    import faiss

    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    flat.add_with_ids(vecs, ids)
    sp = speed(flat, queries, n_single)
    _, exact = flat.search(queries, 10)
    del flat
    return sp, exact


def atelier_index(vecs, ids, queries, n_single: int, memory_budget: str | None = None, ivf_threshold: int | None = None) -> dict:
    """Build, tune and measure the index ``update_index`` would build for ``vecs``
    (``build_index``: the default IVF, its exact fallbacks, or a budget's choice), searched
    as ``atelier search`` does (``search_by_vector`` with the meta: large batches go exact
    when that measured faster)."""

    from evaluator.embedding.index import IndexConfig, build_index, set_search_param
    from evaluator.embedding.index_budget import parse_size

    exact_speed, exact = exact_baseline(vecs, ids, queries, n_single)
    cfg = IndexConfig() if ivf_threshold is None else IndexConfig(ivf_threshold=ivf_threshold)
    budget = parse_size(memory_budget) if memory_budget else None
    t0 = time.perf_counter()
    index, meta = build_index(vecs, ids, cfg, budget)
    build_s = time.perf_counter() - t0
    searcher = _Searcher(index, meta)
    tuned = versus_exact(searcher, queries, exact, exact_speed, n_single)
    by_nprobe = {}
    if meta["kind"] in ("ivf", "ivfsq", "ivfpq"):
        for probe in sorted({1, 2, 4, 8, 16, 32, meta["nprobe"]}):
            if probe <= meta["nlist"]:
                set_search_param(index, meta["kind"], probe)
                by_nprobe[probe] = versus_exact(index, queries, exact, exact_speed, n_single)
        set_search_param(index, meta["kind"], meta["nprobe"])
    return {
        "kind": meta.get("layout") or "Flat", "atelier_kind": meta["kind"], "nlist": meta.get("nlist"), "nprobe": meta.get("nprobe"),
        "ef_search": meta.get("ef_search"), "refine_factor": meta.get("refine_factor"),
        "train_size": meta.get("train_size"), "target_recall": cfg.target_recall,
        "recall_at_10_tuning_sample": round(meta["recall_at_10"], 4), **tuned,
        "build_seconds": round(build_s, 1), "bytes": meta.get("bytes"), "file_bytes": _file_bytes(index),
        "reason": meta.get("reason"), "exact_batch_from": meta.get("exact_batch_from"), "batch_timing": meta.get("batch_timing"),
        "candidates": meta.get("candidates"), "memory_budget": memory_budget,
        "exact_ms_per_query_single": round(1000 * exact_speed["single"], 3),
        "exact_ms_per_query_batch": round(1000 * exact_speed["batch"], 4),
        "by_nprobe": by_nprobe, "_exact": exact, "_exact_speed": exact_speed,
    }


def _file_bytes(index) -> int:
    """Size of the index written as atelier writes it (to a temporary file: at 10M vectors
    a serialized copy in memory would be the size of the vectors again)."""
    import tempfile

    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size


class _Searcher:
    """The index searched the way atelier's search functions do (``search_by_vector``)."""

    def __init__(self, index, meta: dict) -> None:
        from evaluator.embedding.index import search_by_vector

        self.search = lambda q, k: search_by_vector(index, q, k, meta)


def autofaiss_index(vecs, queries, exact, exact_speed: dict, n_single: int, budget: str) -> dict:
    """autofaiss (clip-retrieval's index builder) under a memory budget, measured the same
    way; its ids are row positions, ``exact`` holds positions too."""
    import logging

    try:
        from autofaiss import build_index
    except ImportError as exc:
        return {"skipped": f"autofaiss not importable: {exc}"}
    t0 = time.perf_counter()
    index, infos = build_index(embeddings=vecs, save_on_disk=False, metric_type="ip", max_index_memory_usage=budget,
                               current_memory_available="6G", min_nearest_neighbors_to_retrieve=10, verbose=logging.ERROR)
    build_s = time.perf_counter() - t0
    return {"kind": infos.get("index_key"), "params": infos.get("index_param"), "budget": budget, "build_seconds": round(build_s, 1),
            **versus_exact(index, queries, exact, exact_speed, n_single)}


def neighbourhood_overlap(exact_ids, ids, labels, query_labels, sub: int) -> dict:
    """How much of a query's exact 10-NN lies in its own cluster (1.0 would be trivial for IVF)."""
    import numpy as np

    pos = np.searchsorted(ids, exact_ids)
    nn = labels[pos]
    own = nn == query_labels[:, None]
    sibling = nn // sub == (query_labels // sub)[:, None]
    return {"own_cluster_share": round(float(own.mean()), 3), "queries_with_all_10_in_own_cluster": round(float(own.all(1).mean()), 3),
            "super_cluster_share": round(float(sibling.mean()), 3)}


def _peak_rss_bytes() -> int:
    """The process's peak resident memory (Linux reports kilobytes): the vectors, the exact
    baseline and the indexes the run held at once, not one index's size."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries: batch size and recall sample")
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--super", type=int, default=1000, help="super-clusters")
    parser.add_argument("--sub", type=int, default=8, help="sibling clusters per super-cluster")
    parser.add_argument("--sub-spread", type=float, default=0.3, help="noise norm of a sibling centre around its super-centre")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm of a vector around its centre")
    parser.add_argument("--uniform-n", type=int, default=None, help="size of the uniform worst case (default --n; 0 skips)")
    parser.add_argument("--index-memory", default=None, help="also build atelier's choice under this memory budget (e.g. 2GB)")
    parser.add_argument("--budget-only", action="store_true",
                        help="build only the --index-memory choice, not the default IVF too: at 10M vectors the "
                             "default's flat lists alone are n x dim x 4 bytes, and the two builds would not fit together")
    parser.add_argument("--autofaiss", action="store_true", help="also build and measure autofaiss on the clustered data")
    parser.add_argument("--autofaiss-budget", default="2GB")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "faiss.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.budget_only and not args.index_memory:
        raise SystemExit("--budget-only needs --index-memory (the budget whose choice is measured)")
    import faiss
    import numpy as np

    ids = np.arange(args.n, dtype=np.int64) * 2 + 1
    vecs, labels = clustered_vectors(args.n, args, seed=1)
    queries, query_labels = clustered_vectors(args.queries, args, seed=2)  # held out, same centres
    first = atelier_index(vecs, ids, queries, args.single, memory_budget=args.index_memory if args.budget_only else None)
    exact, exact_speed = first.pop("_exact"), first.pop("_exact_speed")
    result = {"index_memory": first} if args.budget_only else first
    overlap = neighbourhood_overlap(exact, ids, labels, query_labels, args.sub)
    if args.index_memory and not args.budget_only:
        budgeted = atelier_index(vecs, ids, queries, args.single, memory_budget=args.index_memory)
        budgeted.pop("_exact"), budgeted.pop("_exact_speed")
        result["index_memory"] = budgeted
    if args.autofaiss:
        positions = (exact - 1) // 2  # ids are 2 * row + 1
        result["autofaiss"] = autofaiss_index(vecs, queries, positions, exact_speed, args.single, args.autofaiss_budget)
    del vecs
    n_uniform = args.n if args.uniform_n is None else args.uniform_n
    if n_uniform:
        # past the exact threshold at any size: the worst case of the approximate path
        uni = atelier_index(uniform_vectors(n_uniform, args.dim, 1), ids[:n_uniform], uniform_vectors(args.queries, args.dim, 2),
                            args.single, ivf_threshold=min(n_uniform, 200_000))
        uni.pop("_exact"), uni.pop("_exact_speed")
        result["uniform"] = {"n": n_uniform, **uni}
    out = {
        "name": "faiss", "n": args.n, "dim": args.dim, "queries_held_out": args.queries, "single_queries_timed": args.single, **result,
        "data": {"distribution": "clustered unit vectors, two levels", "super_clusters": args.super, "clusters_per_super": args.sub,
                 "sub_spread": args.sub_spread, "noise": args.noise, **overlap},
        "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "cpu_count": os.cpu_count(),
        "peak_rss_bytes": _peak_rss_bytes(), "budget_only": args.budget_only,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
