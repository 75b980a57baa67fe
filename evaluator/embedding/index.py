"""One FAISS index per embedding model over every image; FAISS ids are image ids.

The kind (``kind`` in ``index/<model>.json``) is chosen by measurement:
- ``flat``: exact inner-product search (``IndexFlatIP``; vectors are L2-normalised, so
  inner product = cosine) below ``ivf_threshold`` vectors, and past it when no
  approximate index is worth it (``reason`` says why);
- ``ivf``: the default past the threshold, ``IVF{n}_HNSW32,Flat`` with ~4·sqrt(N) lists
  found by an HNSW coarse quantizer and trained with spherical k-means (centroids on the
  unit sphere, as the vectors are);
- ``ivfsq`` / ``ivfpq`` / ``hnsw``: chosen with ``ivf`` under a memory budget
  (``--index-memory``, ``evaluator.embedding.index_budget``).

Tuning: nprobe (efSearch for HNSW) is raised along a ladder finer than doubling until
recall@10 on leave-one-out queries (sampled vectors whose own id is removed from both the
exact and the approximate answer, so no query finds itself) reaches the target plus a
margin. An IVF that needs more than a quarter of its lists scans about that share of the
vectors query by query, no faster than exact BLAS search: the index is then exact, with
the reason recorded. Batches past faiss's BLAS threshold are searched exactly when that
measured faster (``exact_batch_from``, ``evaluator.embedding.index_exact``).

A recall under the target is never silent: ``warning`` in the meta JSON and the runs row,
printed by ``atelier index build`` / ``info``, returned by ``index_status``.

Everything is wrapped in ``IndexIDMap2`` (ids = image ids, ``reconstruct`` by id). New
images are added without a rebuild (an IVF keeps its trained centroids); after adds the
recall is re-measured and nprobe re-tuned, and when the target is out of reach the
index is rebuilt, logged and recorded in ``rebuilt``. Files are written atomically: a
reader sees the old index or the new one, never half of one.

Reads ``embeddings/<model>/part-*.parquet``; writes ``index/<model>.faiss`` and its
``index/<model>.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.embedding.index_budget import IVF_KINDS, REFINED_KINDS
from evaluator.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from evaluator.embedding.clip import LoadedClip
    from evaluator.workspace.workdir import Workdir

log = logging.getLogger(__name__)

# An IVF probing more than this share of its lists reads about that share of the vectors
# one query at a time: exact BLAS search is as fast and exact (issue 19).
EXACT_SHARE = 0.25
# HNSW efSearch ladder (ratio ~1.4 from 16): past 1024 an HNSW query costs more than an IVF's.
EF_SEARCH = (16, 1024)
# Re-ranking factors tuning tries for IVF-SQ8 / IVF-PQ (candidates re-ranked exactly per
# neighbour asked for). PQ64 at 1M x 512 clustered: 0.903 at 10, 0.995 at 40 (nprobe 4),
# 0.999 at 100 for 0.63 ms a query against 0.34; past 160 a query reads thousands of vectors.
REFINE_FACTORS = (4, 10, 20, 40, 80, 160)
# A step up the nprobe ladder that gains less recall than this: the re-ranking is the limit.
PLATEAU = 0.002


# Past 2M vectors the training sample is this share of them, so the lists can follow
# 4*sqrt(N): at 10M x 64 (bench_serve's vectors) a 500k sample gave IVF12668 at nprobe 2
# (recall@10 0.995), single queries 1.58x faster than the 100k sample's IVF2564 at nprobe 6
# (0.963), for a build of 842 s instead of 586 s. A constant, not an IndexConfig field: the
# config is part of every store's score fingerprint, and a new field would make every
# store rescore for a rule that changes nothing below 2M vectors.
TRAIN_SHARE = 0.05


@dataclass(frozen=True)
class IndexConfig:
    # Exact search over 200k x 512 float32 (400 MB) answers in ~50 ms a query on a CPU;
    # past that an IVF keeps queries fast as a store grows to millions of images.
    ivf_threshold: int = 200_000
    # nlist = ivf_nlist_factor * sqrt(N): sqrt(N) lists (the textbook rule) needed nprobe 64
    # for recall 0.945 at 1M clustered vectors (22x exact); 4*sqrt(N) with an HNSW quantizer
    # reached 0.98 at nprobe 4 (issue 19). Capped so each list gets >= 39 training points.
    ivf_nlist_factor: float = 4.0
    # Lists probed per query to start tuning from; raised along a ladder finer than
    # doubling (ratio ~1.4) until recall@10 reaches target_recall + recall_margin.
    nprobe: int = 1
    # 0.95: one neighbour in twenty may be missed; below that users notice gaps.
    target_recall: float = 0.95
    # The sampled recall is +-0.01 at 500 queries: tune to target + margin so the
    # recall on unseen queries does not fall under the target (it did: 0.946 vs 0.95).
    recall_margin: float = 0.01
    # Queries sampled to measure recall@10 against exact search: +-0.01 at 95%.
    recall_queries: int = 500
    # Training sample for the centroids: FAISS wants 39..256 points per list; more than
    # 256 per list buys nothing, fewer than 39 leaves centroids noisy. 100k caps k-means
    # at ~1 min on 2 cores and allows up to 2,564 lists.
    train_size: int = 100_000  # ... or TRAIN_SHARE of the vectors when that is more (past 2M)
    # k-means iterations: 10 is within 1% of FAISS's default 25 in quantisation error on
    # clustered data, at 40% of the training time.
    kmeans_iterations: int = 10
    # HNSW neighbours per centroid in the coarse quantizer (the "HNSW32" of the layout).
    quantizer_m: int = 32
    seed: int = 0


def meta_path(index_path: Path) -> Path:
    return index_path.with_suffix(".json")


@dataclass
class IndexInfo:
    model: str
    kind: str  # flat | ivf | ivfsq | ivfpq | hnsw
    ntotal: int
    dim: int
    added: int
    nlist: int | None = None
    layout: str | None = None  # the faiss index_factory string, e.g. IVF2048_HNSW32,Flat
    train_size: int | None = None  # vectors the centroids were trained on
    nprobe: int | None = None
    ef_search: int | None = None  # HNSW's search width, the nprobe of kind hnsw
    refine_factor: int | None = None  # an IVF-SQ8's or IVF-PQ's candidates re-ranked per neighbour
    recall_at_10: float | None = None
    recall_queries: int | None = None
    target_recall: float | None = None
    warning: str | None = None  # the recall is under the target: said wherever the index is used
    reason: str | None = None  # why this kind: an exact fallback, a budget's choice
    exact_batch_from: int | None = None  # batches this large are searched exactly (measured faster)
    batch_timing: dict | None = None  # that measurement
    batch_assign: str | None = None  # "matmul": a batch's IVF lists found by one BLAS matmul (measured faster)
    assign_timing: dict | None = None  # that measurement
    bytes: int | None = None  # estimated resident bytes when loaded for search
    file_bytes: int | None = None
    disk_bytes: int | None = None  # an IVF-SQ's or IVF-PQ's re-ranking vectors, memory-mapped from the file
    memory_budget: int | None = None  # --index-memory, kept for later updates
    candidates: list | None = None  # what the budget measured or skipped
    rebuilt: str | None = None  # why this update rebuilt the index
    fallback_at: int | None = None  # vectors when exact was chosen past the threshold: retried at 2x
    built_at: str = ""
    seconds: float = 0.0


def _ids_in(index: Any) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype("int64")


def _new_flat(dim: int) -> Any:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def ivf_layout(n: int, config: IndexConfig) -> tuple[int, int]:
    """(nlist, training sample size) for ``n`` vectors: ivf_nlist_factor*sqrt(n) lists,
    at most one per 39 training vectors (a sample of train_size, or TRAIN_SHARE of ``n``
    when larger), trained on up to 256 vectors per list."""
    import math

    train = min(n, max(config.train_size, int(TRAIN_SHARE * n)))
    nlist = max(1, min(int(config.ivf_nlist_factor * math.sqrt(n)), train // 39))
    return nlist, min(train, 256 * nlist)


def _trained_quantizer(vecs: np.ndarray, config: IndexConfig) -> tuple[Any, int, np.ndarray]:
    """(HNSW quantizer holding spherical k-means centroids, nlist, training sample). The
    centroids are assigned exactly during training (an HNSW over moving centroids would be
    rebuilt every iteration) and then put in the HNSW that routes queries and adds."""
    import faiss
    import numpy as np

    n, dim = vecs.shape
    nlist, train = ivf_layout(n, config)
    rng = np.random.default_rng(config.seed)
    sample = np.ascontiguousarray(vecs[rng.choice(n, size=train, replace=False)], dtype=np.float32)
    clustering = faiss.Clustering(dim, nlist)
    clustering.spherical = True  # unit vectors: centroids renormalised each iteration
    clustering.niter = config.kmeans_iterations
    clustering.seed = config.seed
    clustering.max_points_per_centroid = 256
    clustering.train(sample, faiss.IndexFlatIP(dim))
    centroids = faiss.vector_to_array(clustering.centroids).reshape(nlist, dim)
    quantizer = faiss.IndexHNSWFlat(dim, config.quantizer_m, faiss.METRIC_INNER_PRODUCT)
    quantizer.add(centroids)
    return quantizer, nlist, sample


def _new_ivf(vecs: np.ndarray, config: IndexConfig) -> tuple[Any, int]:
    """An empty trained ``IVF{nlist}_HNSW{M},Flat`` (inner product) in an ``IndexIDMap2``."""
    import faiss

    quantizer, nlist, _ = _trained_quantizer(vecs, config)
    ivf = faiss.IndexIVFFlat(quantizer, vecs.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True  # the quantizer holds the trained centroids
    _set_nprobe(ivf, config.nprobe)
    ivf.make_direct_map(True)  # reconstruct by id through IndexIDMap2
    # the faiss wrappers keep `quantizer` and `ivf` referenced by the objects built on them
    return faiss.IndexIDMap2(ivf), nlist


def _refined(ivf: Any, k_factor: int, config: IndexConfig) -> Any:
    """``ivf`` behind an exact re-ranking of its ``k_factor * k`` best candidates, by id."""
    import faiss

    _set_nprobe(ivf, config.nprobe)
    refine = faiss.IndexRefineFlat(ivf)
    refine.k_factor = k_factor
    return faiss.IndexIDMap2(refine)


def _new_ivfsq(vecs: np.ndarray, config: IndexConfig) -> Any:
    """An empty trained ``IVF{nlist}_HNSW{M},SQ8`` whose candidates an ``IndexRefineFlat``
    re-ranks exactly (SQ_RERANK_FACTOR candidates per neighbour)."""
    import faiss

    from evaluator.embedding.index_budget import SQ_RERANK_FACTOR

    quantizer, nlist, sample = _trained_quantizer(vecs, config)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, vecs.shape[1], nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
    ivf.train(sample[:65_536])  # the quantizer is trained: only each dimension's residual range is learnt
    return _refined(ivf, SQ_RERANK_FACTOR, config)


def _new_ivfpq(vecs: np.ndarray, config: IndexConfig) -> Any:
    """An empty trained ``IVF{nlist}_HNSW{M},PQ{dim/8}`` whose candidates an
    ``IndexRefineFlat`` re-ranks exactly (RERANK_FACTOR candidates per neighbour)."""
    import math

    import faiss

    from evaluator.embedding.index_budget import RERANK_FACTOR, pq_subquantizers

    dim = vecs.shape[1]
    quantizer, nlist, sample = _trained_quantizer(vecs, config)
    # 8-bit codes need 39 * 256 training points; a smaller sample gets fewer bits (4 at 624)
    bits = min(8, max(1, int(math.log2(min(len(sample), 16_384) / 39))))
    ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim), bits, faiss.METRIC_INNER_PRODUCT)
    # The quantizer already holds nlist centroids: only the PQ is trained, on 16k residuals
    # (faiss wants >= 39 per code, 256 codes) in 10 iterations: 64 sub-k-means over the
    # whole sample took 97 s at 30k x 512 on two busy cores, for no recall after re-ranking.
    ivf.pq.cp.niter = 10
    ivf.train(sample[:16_384])
    return _refined(ivf, RERANK_FACTOR, config)


def build_kind(kind: str, vecs: np.ndarray, ids: np.ndarray, config: IndexConfig) -> Any:
    """An index of ``kind`` holding every vector under its id (not yet tuned)."""
    import faiss
    import numpy as np

    from evaluator.embedding.index_budget import HNSW_M

    dim = vecs.shape[1]
    if kind == "flat":
        index = _new_flat(dim)
    elif kind == "ivf":
        index = _new_ivf(vecs, config)[0]
    elif kind == "ivfsq":
        index = _new_ivfsq(vecs, config)
    elif kind == "ivfpq":
        index = _new_ivfpq(vecs, config)
    elif kind == "hnsw":
        index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT))
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    for s in range(0, len(vecs), 262_144):  # float32 copies a quarter million at a time
        index.add_with_ids(np.ascontiguousarray(vecs[s : s + 262_144], dtype=np.float32), ids[s : s + 262_144])
    return index


def _set_nprobe(ivf: Any, nprobe: int) -> None:
    """nprobe, and an HNSW quantizer's efSearch wide enough to find those lists.

    HNSW returns at most efSearch lists, and a narrow search misses the nearest ones. On
    1M clustered vectors (IVF2564_HNSW32) recall@10 stopped rising at efSearch 32 for
    nprobe 2-4 (nprobe 4: 0.9725 at 12, 0.9985 at 32 and at 64), while the quantizer's
    search was most of a query's cost: efSearch 64 -> 32 took the batched speed from 52x
    to 60x exact at the same recall. Past nprobe 4, 8 per list keeps the same margin;
    never more than the lists there are.
    """
    import faiss

    ivf.nprobe = int(nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = min(max(32, 8 * int(nprobe)), max(int(ivf.nlist), int(nprobe)))


def set_search_param(index: Any, kind: str, param: int) -> None:
    """nprobe of an IVF kind, efSearch of an HNSW."""
    import faiss

    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = int(param)
    elif kind in IVF_KINDS:
        _set_nprobe(_ivf_of(index), param)


def ivf_layout_name(index: Any) -> str | None:
    """The index_factory string of an IVF-Flat index (``IVF2048_HNSW32,Flat``), None if exact."""
    import faiss

    ivf = _ivf_of(index)
    if ivf is None:
        return None
    quantizer = faiss.downcast_index(ivf.quantizer)
    q = f"_HNSW{quantizer.hnsw.nb_neighbors(1)}" if isinstance(quantizer, faiss.IndexHNSW) else ""
    return f"IVF{ivf.nlist}{q},Flat"


def _ivf_of(index: Any) -> Any | None:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def exact_topk(
    vecs: np.ndarray, ids: np.ndarray, k: int = 10, n_queries: int = 500, seed: int = 0, leave_out: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(queries [Q, D], exact top-k ids [Q, k]): queries sampled from ``vecs``, neighbours
    by a chunked matmul over every vector (the ground truth for recall). ``leave_out``:
    a query is not its own neighbour, as for a new image that is not in the index."""
    import numpy as np

    n = len(vecs)
    rng = np.random.default_rng(seed)
    q = rng.choice(n, size=min(n_queries, n), replace=False)
    queries = np.ascontiguousarray(vecs[q], dtype=np.float32)
    kk = min(k, n - 1 if leave_out else n)
    best_s = np.full((len(q), kk), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), kk), dtype=np.int64)
    for s in range(0, n, 65536):
        block = np.ascontiguousarray(vecs[s : s + 65536], dtype=np.float32)
        sims = queries @ block.T
        if leave_out:
            inside = np.flatnonzero((q >= s) & (q < s + len(block)))
            sims[inside, q[inside] - s] = -np.inf
        cand_s = np.concatenate([best_s, sims], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(ids[s : s + 65536], sims.shape)], axis=1)
        top = np.argpartition(-cand_s, kk - 1, axis=1)[:, :kk]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    return queries, best_i


def recall_against(index: Any, queries: np.ndarray, exact_ids: np.ndarray, own_ids: np.ndarray | None = None) -> float:
    """Share of the exact top-k ids that ``index`` also returns in its top-k; with
    ``own_ids`` (each query's id in the index) the query itself is dropped from the answer."""
    k = exact_ids.shape[1]
    _, found = index.search(queries, k + (own_ids is not None))
    if own_ids is not None:
        found = [[i for i in row if i != own][:k] for row, own in zip(found.tolist(), own_ids.tolist(), strict=True)]
    hits = sum(len(set(a.tolist()) & set(b)) for a, b in zip(exact_ids, [list(r) for r in found], strict=True))
    return hits / (len(queries) * k)


def _query_sample(vecs: np.ndarray, ids: np.ndarray, k: int, n_queries: int, seed: int):
    """(queries, exact top-k without themselves, their own ids): leave-one-out ground truth."""
    import numpy as np

    queries, exact = exact_topk(vecs, ids, k, n_queries, seed, leave_out=True)
    own = ids[np.random.default_rng(seed).choice(len(vecs), size=min(n_queries, len(vecs)), replace=False)]
    return queries, exact, own


def measure_recall(
    index: Any, vecs: np.ndarray, ids: np.ndarray, k: int = 10, n_queries: int = 500, seed: int = 0
) -> float:
    """recall@k of ``index`` vs exact inner-product search on leave-one-out queries
    sampled from ``vecs`` (a query's own vector is excluded from both answers)."""
    if len(vecs) < 2:
        return float("nan")
    queries, exact, own = _query_sample(vecs, ids, k, n_queries, seed)
    return recall_against(index, queries, exact, own)


def nprobe_ladder(start: int, nlist: int) -> list[int]:
    """nprobe values to try, ratio ~1.4 (1, 2, 3, 4, 6, 8, 11, 16, 22, ...): finer than
    doubling, so tuning stops near the smallest nprobe that reaches the target."""
    out, n = [], max(1, min(start, nlist))
    while True:
        out.append(n)
        if n >= nlist:
            return out
        n = min(nlist, max(n + 1, round(n * 1.4)))


def search_ladder(index: Any, kind: str, start: int) -> list[int]:
    """The values tuning tries: nprobe up to a quarter of the lists (past that exact search
    is as fast), efSearch from 16 to 1024 for HNSW."""
    if kind == "hnsw":
        low, high = EF_SEARCH
        return [low * v for v in nprobe_ladder(1, high // low)]
    nlist = _ivf_of(index).nlist
    return nprobe_ladder(start, max(1, int(nlist * EXACT_SHARE)))


def tune(index: Any, kind: str, sample: tuple, config: IndexConfig, from_factor: int | None = None) -> tuple[int, float]:
    """Raise nprobe / efSearch along ``search_ladder`` until leave-one-out recall@10 on
    ``sample`` (queries, exact ids, own ids) reaches target_recall + recall_margin;
    returns (value, recall) — the last value tried and its recall when never reached.

    A re-ranked kind (``REFINED_KINDS``) also raises its re-ranking factor, left set on
    the index: with too few candidates re-ranked, recall stops rising whatever nprobe is
    (IVF-PQ64 at 1M x 512: 0.903 at factor 10 from nprobe 4 to 641; 0.995 at 40, nprobe 4),
    so each factor's nprobe ladder ends where recall stops rising. ``from_factor`` (a
    re-tune after adds: the factor tuned before) skips the smaller factors: re-ranking
    more candidates never finds fewer true neighbours, and each factor below it would
    climb its nprobe ladder to a plateau already known to be under the goal."""
    if kind not in REFINED_KINDS:
        param, recall, _ = _climb(index, kind, sample, config, stop_on_plateau=False)
        return param, recall
    best: tuple[int, int, float] | None = None
    for factor in refine_factors(kind, from_factor):
        set_refine_factor(index, factor)
        param, recall, met = _climb(index, kind, sample, config, stop_on_plateau=True)
        if best is None or recall > best[2]:
            best = (factor, param, recall)
        if met:
            break
    factor, param, recall = best
    set_refine_factor(index, factor)
    set_search_param(index, kind, param)
    return param, recall


def _climb(index: Any, kind: str, sample: tuple, config: IndexConfig, stop_on_plateau: bool) -> tuple[int, float, bool]:
    """(value, recall, whether the goal was met) along ``search_ladder``; with
    ``stop_on_plateau`` it stops once a step gains less than PLATEAU and returns the step before."""
    goal, previous = _goal(config), None
    for param in search_ladder(index, kind, config.nprobe):
        set_search_param(index, kind, param)
        recall = recall_against(index, *sample)
        if recall >= goal:
            return param, recall, True
        if stop_on_plateau and previous is not None and recall - previous[1] < PLATEAU:
            set_search_param(index, kind, previous[0])
            return previous[0], previous[1], False
        previous = (param, recall)
    return param, recall, False


def refine_factors(kind: str, at_least: int | None = None) -> list[int]:
    """The re-ranking factors tuning tries for ``kind``, from its default (or ``at_least``,
    if larger) up; a factor past the ladder's top is tried alone."""
    from evaluator.embedding.index_budget import RERANK_FACTOR, SQ_RERANK_FACTOR

    start = max(SQ_RERANK_FACTOR if kind == "ivfsq" else RERANK_FACTOR, at_least or 0)
    return [f for f in REFINE_FACTORS if f >= start] or [start]


def set_refine_factor(index: Any, factor: int) -> None:
    """Candidates re-ranked exactly per neighbour asked for, of an index under ``IndexIDMap2``."""
    import faiss

    faiss.downcast_index(index.index).k_factor = float(factor)


def refine_factor(index: Any) -> int | None:
    """The re-ranking factor of a re-ranked index, None for the other kinds."""
    import faiss

    inner = faiss.downcast_index(index.index)
    return int(inner.k_factor) if isinstance(inner, faiss.IndexRefine) else None


def tune_nprobe(index: Any, vecs: np.ndarray, ids: np.ndarray, config: IndexConfig) -> tuple[int, float]:
    """``tune`` of an IVF-Flat on a fresh leave-one-out sample of ``vecs``."""
    return tune(index, "ivf", _query_sample(vecs, ids, 10, config.recall_queries, config.seed), config)


def recall_warning(meta: dict) -> str | None:
    """The warning for an index whose measured recall is under its target, else None
    (also for meta files written before warnings were recorded)."""
    if meta.get("warning"):
        return meta["warning"]
    recall, target = meta.get("recall_at_10"), meta.get("target_recall") or IndexConfig.target_recall
    if meta.get("kind", "flat") == "flat" or recall is None or recall >= target:
        return None
    return (f"recall@10 {recall:.3f} (on {meta.get('recall_queries')} held-out queries) is under the target {target}: "
            f"about {1 - recall:.0%} of the nearest neighbours are missed; rebuild with a larger --index-memory or "
            "a lower --target-recall")


def index_status(workdir: Workdir, model: str) -> dict:
    """What a search caller (``atelier search``, ``serve`` /health) says about the index:
    kind, size, recall, target and the warning when the recall is under the target."""
    path = meta_path(workdir.index(model))
    if not path.is_file():
        return {"model": model, "built": False, "warning": f"no index for model {model!r}: run `atelier index build`"}
    meta = json.loads(path.read_text(encoding="utf-8"))
    keys = ("kind", "layout", "ntotal", "dim", "nprobe", "ef_search", "recall_at_10", "recall_queries", "target_recall",
            "reason", "exact_batch_from", "batch_assign", "bytes", "memory_budget", "rebuilt", "built_at")
    warning = recall_warning(meta)
    return {"model": model, "built": True, **{k: meta.get(k) for k in keys}, "recall_ok": warning is None, "warning": warning}


# ------------------------------------------------------------------ build and update


def _goal(config: IndexConfig) -> float:
    return min(1.0, config.target_recall + config.recall_margin)


def _flat_of(vecs: np.ndarray, ids: np.ndarray, memory_budget: int | None, **extra: Any) -> tuple[Any, dict]:
    from evaluator.embedding.index_budget import estimate_bytes

    fields = {"kind": "flat", "recall_at_10": 1.0, "recall_queries": 0, "memory_budget": memory_budget,
              "bytes": estimate_bytes("flat", len(vecs), vecs.shape[1], 0), **extra}
    return build_kind("flat", vecs, ids, IndexConfig()), fields


def choose_within(vecs: np.ndarray, ids: np.ndarray, config: IndexConfig, budget: int, sample: tuple):
    """(the chosen index, its Candidate, every Candidate): build and measure each candidate
    within ``budget`` bytes on the leave-one-out ``sample``; the fastest meeting the target
    wins, else the one with the best recall."""
    from evaluator.embedding.index_budget import candidates_within, single_query_ms

    n, dim = vecs.shape
    cands = candidates_within(budget, n, dim, ivf_layout(n, config)[0])
    built: dict[str, Any] = {}
    for cand in [c for c in cands if c.estimated_bytes <= budget]:
        start = time.perf_counter()
        index = build_kind(cand.kind, vecs, ids, config)
        cand.param, cand.recall_at_10 = tune(index, cand.kind, sample, config)
        cand.refine_factor = refine_factor(index)
        cand.build_seconds = round(time.perf_counter() - start, 2)
        cand.ms_per_query = round(single_query_ms(index, sample[0]), 4)
        cand.status = "measured"
        built[cand.kind] = index
    measured = [c for c in cands if c.status == "measured"]
    meeting = [c for c in measured if c.recall_at_10 >= _goal(config)]
    best = min(meeting, key=lambda c: c.ms_per_query) if meeting else max(measured, key=lambda c: c.recall_at_10)
    return built.pop(best.kind), best, cands  # the others are freed on return


def _approximate(vecs: np.ndarray, ids: np.ndarray, config: IndexConfig, memory_budget: int | None, sample: tuple):
    """(index, kind, param, recall, reason, candidates): the default IVF, or the budget's choice."""
    from evaluator.embedding.index_budget import human_size

    if memory_budget is None:
        index = build_kind("ivf", vecs, ids, config)
        param, recall = tune(index, "ivf", sample, config)
        return index, "ivf", param, recall, None, None
    index, best, cands = choose_within(vecs, ids, config, memory_budget, sample)
    met = best.recall_at_10 >= _goal(config)
    reason = (f"--index-memory {human_size(memory_budget)}: {best.layout} is the fastest measured candidate "
              f"({best.ms_per_query} ms a query) reaching recall@10 {_goal(config)} within the budget" if met else
              f"--index-memory {human_size(memory_budget)}: no candidate within the budget reached recall@10 "
              f"{_goal(config)}; {best.layout} came closest")
    return index, best.kind, best.param, best.recall_at_10, reason, [c.row() for c in cands]


def build_index(vecs: np.ndarray, ids: np.ndarray, config: IndexConfig, memory_budget: int | None = None) -> tuple[Any, dict]:
    """(index, IndexInfo fields) for ``vecs``, chosen by measurement.

    1. Exact below the threshold (when it fits the budget).
    2. Past it the default IVF, or the fastest candidate meeting the target within
       ``memory_budget`` bytes, tuned on one leave-one-out sample.
    3. Exact when the target was out of reach within a quarter of the lists (and exact fits).
    4. The batch size from which exact search is faster, measured.
    5. For an IVF kind, whether a batch finds its lists faster by one matmul against the
       centroids than by the HNSW quantizer, measured (``index_assign``).
    """
    import faiss

    from evaluator.embedding.index_assign import assign_timing
    from evaluator.embedding.index_budget import (
        candidates_within,
        disk_bytes,
        estimate_bytes,
        layout_string,
    )
    from evaluator.embedding.index_exact import batch_fallback

    n, dim = vecs.shape
    flat_fits = memory_budget is None or estimate_bytes("flat", n, dim, 0) <= memory_budget
    if n < config.ivf_threshold and flat_fits:
        return _flat_of(vecs, ids, memory_budget)
    if memory_budget is not None:
        candidates_within(memory_budget, n, dim, ivf_layout(n, config)[0])  # nothing fits: say so before any work
    sample = _query_sample(vecs, ids, 10, config.recall_queries, config.seed)
    index, kind, param, recall, reason, cands = _approximate(vecs, ids, config, memory_budget, sample)
    nlist, train = ivf_layout(n, config)
    layout = layout_string(kind, nlist, dim, config.quantizer_m)
    bits = faiss.downcast_index(_ivf_of(index)).pq.nbits if kind == "ivfpq" else 8
    if bits != 8:
        layout = layout.replace(",RFlat", f"x{bits},RFlat")
    if recall < _goal(config) and flat_fits:
        what = f"efSearch {param}" if kind == "hnsw" else f"nprobe {param}, a quarter of its {nlist} lists,"
        del index
        return _flat_of(vecs, ids, memory_budget, candidates=cands, fallback_at=n, reason=(
            f"{layout} reached recall@10 {recall:.3f} at {what} under the goal {_goal(config)}: "
            "exact search is about as fast there, and exact"))
    exact_from, timing = batch_fallback(index, sample[0])
    assign, assign_timed = assign_timing(index, sample[0]) if kind in IVF_KINDS else (None, None)
    fields = {"kind": kind, "layout": layout, "recall_at_10": recall, "recall_queries": len(sample[0]),
              "reason": reason, "candidates": cands, "memory_budget": memory_budget, "exact_batch_from": exact_from,
              "batch_timing": timing, "batch_assign": assign, "assign_timing": assign_timed or None,
              "bytes": estimate_bytes(kind, n, dim, nlist)}
    if kind == "hnsw":
        fields["ef_search"] = param
    else:
        fields.update(nlist=nlist, train_size=train, nprobe=param, disk_bytes=disk_bytes(kind, n, dim),
                      refine_factor=refine_factor(index))
    return index, fields


def _rebuild_reason(index: Any, meta: dict, n: int, config: IndexConfig, memory_budget: int | None) -> str | None:
    """Why this update builds the index from scratch, or None to add to the existing one."""
    if index is None:
        return "new"
    if memory_budget is not None and memory_budget != meta.get("memory_budget"):
        from evaluator.embedding.index_budget import human_size

        return f"--index-memory changed to {human_size(memory_budget)}"
    if meta.get("kind", "flat") == "flat" and n >= config.ivf_threshold:
        tried = meta.get("fallback_at")
        if not tried or n >= 2 * tried:
            return f"{n:,} vectors: past the exact threshold {config.ivf_threshold:,}"
    return None


def _add_and_remeasure(index: Any, meta: dict, vecs: np.ndarray, ids: np.ndarray, config: IndexConfig) -> tuple[int, dict, str | None]:
    """(vectors added, IndexInfo fields, why a rebuild is needed or None): new vectors go
    into the existing index; an approximate one has its recall re-measured and re-tuned."""
    import numpy as np

    missing = ~np.isin(ids, _ids_in(index))
    added = int(missing.sum())
    for s in np.array_split(np.flatnonzero(missing), max(1, added // 262_144)):
        if len(s):
            index.add_with_ids(np.ascontiguousarray(vecs[s], dtype=np.float32), ids[s])
    keep = {f.name for f in fields(IndexInfo)} - {"model", "ntotal", "dim", "added", "rebuilt", "built_at", "seconds", "warning"}
    out = {k: v for k, v in meta.items() if k in keep}
    kind = meta.get("kind", "flat")
    if kind == "flat":
        return added, {**out, "recall_at_10": 1.0, "recall_queries": 0}, None
    if not added and meta.get("recall_at_10") is not None:
        return added, out, None
    sample = _query_sample(vecs, ids, 10, config.recall_queries, config.seed + len(ids))  # new queries each size
    param, recall = tune(index, kind, sample, config, from_factor=meta.get("refine_factor"))
    out.update({"ef_search" if kind == "hnsw" else "nprobe": param, "recall_at_10": recall, "recall_queries": len(sample[0])})
    if kind in REFINED_KINDS:
        out["refine_factor"] = refine_factor(index)
    was_met = (meta.get("recall_at_10") or 0) >= _goal(config)
    if recall < _goal(config) and was_met:
        return added, out, (f"after {added:,} adds recall@10 on held-out queries is {recall:.3f} at its best "
                            f"{'efSearch' if kind == 'hnsw' else 'nprobe'} {param}, under the goal {_goal(config)}")
    return added, out, None


def _existing(path: Path, dim: int) -> tuple[Any, dict]:
    """The saved index, fully in memory (adds need that), and its meta; (None, {}) if none or another dim."""
    if not path.is_file():
        return None, {}
    index, meta = _read(path, mmap=False)
    return (None, {}) if dim and index.d != dim else (index, meta)


def update_index(
    workdir: Workdir,
    model: str,
    config: IndexConfig | None = None,
    rebuild: bool = False,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    memory_budget: int | None = None,
) -> IndexInfo:
    """Add every embedded image missing from the model's index, or (re)build it when
    needed: past the exact threshold, a new ``memory_budget`` (bytes; kept in the meta for
    later updates), or a recall after adds under the target (logged, in ``rebuilt``).

    ``embeddings``: ``load_embeddings`` output when the caller has it already (a
    million vectors are 2 GB; read them once).
    """
    from evaluator.embedding.images import load_embeddings

    cfg = config or IndexConfig()
    start = time.perf_counter()
    path = workdir.index(model)
    ids, vecs = embeddings if embeddings is not None else load_embeddings(workdir, model)
    dim = vecs.shape[1] if vecs.ndim == 2 and len(vecs) else 0
    index, meta = (None, {}) if rebuild else _existing(path, dim)
    saved = meta or (json.loads(meta_path(path).read_text(encoding="utf-8")) if meta_path(path).is_file() else {})
    budget = memory_budget if memory_budget is not None else saved.get("memory_budget")  # --rebuild keeps it too
    why = "--rebuild" if rebuild and path.is_file() else _rebuild_reason(index, meta, len(ids), cfg, memory_budget)
    added, rebuilt = 0, None
    if why is None:
        added, fields_, why = _add_and_remeasure(index, meta, vecs, ids, cfg)
    if why is not None:
        if why != "new":  # a recall lost to adds is a warning; a threshold, budget or --rebuild is the plan
            log.log(logging.WARNING if why.startswith("after") else logging.INFO, "rebuilding the index of %s: %s", model, why)
            rebuilt = why
        if len(ids):
            index, fields_ = build_index(vecs, ids, cfg, budget)
        else:
            index, fields_ = _new_flat(dim or 1), {"kind": "flat", "recall_at_10": 1.0, "recall_queries": 0}
        added = len(ids)
    info = _info(model, index, fields_, added, cfg)
    info.rebuilt = rebuilt
    info.seconds = time.perf_counter() - start
    if added or rebuilt or not path.is_file() or info.kind != meta.get("kind"):
        save_index(index, path, info)
    else:
        info.file_bytes = meta.get("file_bytes")
    return info


def _info(model: str, index: Any, fields_: dict, added: int, config: IndexConfig) -> IndexInfo:
    known = {f.name for f in fields(IndexInfo)}
    info = IndexInfo(model=model, ntotal=int(index.ntotal), dim=int(index.d), added=added,
                     **{k: v for k, v in fields_.items() if k in known and k not in ("model", "ntotal", "dim", "added")})
    info.layout = info.layout or ("Flat" if info.kind == "flat" else None)
    info.target_recall = config.target_recall
    info.warning = recall_warning(asdict(info))
    info.built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return info


def atomic_meta(path: Path, info: IndexInfo) -> None:
    from catalog.atomic import atomic_write_text

    atomic_write_text(meta_path(path), json.dumps(asdict(info), indent=2) + "\n")


def save_index(index: Any, path: Path, info: IndexInfo) -> int:
    """Write the index and its meta atomically; returns the index file's bytes."""
    import faiss

    from catalog.atomic import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        size = tmp.stat().st_size
    info.file_bytes = size
    atomic_meta(path, info)
    return size


def _read(path: Path, mmap: bool) -> tuple[Any, dict]:
    """The index at ``path`` with its search parameters applied, and its meta. ``mmap``:
    an IVF-SQ's or IVF-PQ's re-ranking vectors stay in the file (the page cache holds what queries
    read); such an index is read-only, so adds load it without."""
    import faiss

    meta = json.loads(meta_path(path).read_text(encoding="utf-8")) if meta_path(path).is_file() else {}
    kind = meta.get("kind", "flat")
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap and kind in REFINED_KINDS else 0)
    param = meta.get("ef_search") if kind == "hnsw" else meta.get("nprobe")
    if param and kind != "flat":
        set_search_param(index, kind, int(param))
    if meta.get("refine_factor") and kind in REFINED_KINDS:
        set_refine_factor(index, int(meta["refine_factor"]))
    return index, meta


def load_index(workdir: Workdir, model: str) -> tuple[Any, dict]:
    """The saved index of ``model`` (for search) and its metadata; a clear error if none was built."""
    path = workdir.index(model)
    if not path.is_file():
        raise FileNotFoundError(f"no FAISS index for model {model!r} at {path}; run `atelier index build` or `atelier score`")
    return _read(path, mmap=True)


def record_index_run(workdir: Workdir, info: IndexInfo, config: IndexConfig, timeout: float = 120.0) -> str:
    """A ``runs`` row (kind='index') with the index's choice, recall, speed, bytes and any
    warning, written in one transaction, and its JSON under ``runs/``. Returns the run id."""
    import uuid

    import pandas as pd

    from evaluator.workspace.records import Provenance, RunRecord, utcnow
    from evaluator.workspace.store import open_store, transaction, upsert_df

    now = utcnow()
    record = RunRecord(
        run_id=f"index-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", kind="index",
        provenance=Provenance.collect(device="cpu", dtype="float32"),  # FAISS runs on the CPU in float32
        started_at=now, finished_at=now, config={**asdict(config), "memory_budget": info.memory_budget},
        timings={"seconds": round(info.seconds, 3)},
        n_done=info.added, n_skipped=info.ntotal - info.added, message=json.dumps(asdict(info)),
    )
    with open_store(workdir.store, timeout=timeout) as con, transaction(con):
        upsert_df(con, "runs", pd.DataFrame([record.row()]), ["run_id"])
    record.write(workdir)
    return record.run_id


# ------------------------------------------------------------------ search


def search_by_vector(index: Any, vecs: np.ndarray, k: int = 10, meta: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [Q, k], image ids [Q, k]); -1 ids pad when the index is small. With
    the index's ``meta``, a batch of at least ``exact_batch_from`` queries is answered
    exactly, and an IVF's batch of ``min_batch(d)`` or more finds its lists by one
    matmul when ``batch_assign`` says so (each measured faster at build time)."""
    import numpy as np

    from evaluator.embedding.index_assign import MATMUL, can_assign, min_batch, search_assigned
    from evaluator.embedding.index_exact import exact_search

    if k < 1:
        raise InputError(f"k must be >= 1 but is {k}")
    q = np.ascontiguousarray(np.atleast_2d(vecs), dtype=np.float32)
    if q.shape[1] != index.d:
        raise InputError(f"query has dimension {q.shape[1]} but the index has {index.d}")
    exact_from = (meta or {}).get("exact_batch_from")
    if exact_from and len(q) >= exact_from and (meta or {}).get("kind", "flat") != "flat":
        return exact_search(index, q, k)
    if (meta or {}).get("batch_assign") == MATMUL and len(q) >= min_batch(index.d) and can_assign(index):
        return search_assigned(index, q, k)
    return index.search(q, k)


def search_by_image_id(workdir: Workdir, model: str, image_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    index, meta = load_index(workdir, model)
    try:
        vec = index.reconstruct(int(image_id))
    except RuntimeError as exc:
        raise KeyError(f"image id {image_id} is not in the index of model {model!r}") from exc
    return search_by_vector(index, vec, k, meta)


def search_by_text(workdir: Workdir, clip: LoadedClip, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    from evaluator.embedding.text import embed_texts, text_cache_dir

    if not text.strip():
        raise InputError("text must be non-empty")
    index, meta = load_index(workdir, clip.key)
    vec = embed_texts(clip, [text], cache_dir=text_cache_dir(workdir, clip.key))
    return search_by_vector(index, vec, k, meta)


def search_by_image_file(
    workdir: Workdir, clip: LoadedClip, path: str | Path, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    from evaluator.embedding.images import embed_image_files

    index, meta = load_index(workdir, clip.key)
    return search_by_vector(index, embed_image_files(clip, [path]), k, meta)


# ------------------------------------------------------------------ artist centroids


@dataclass
class CentroidIndex:
    """Normalised mean embedding of each artist of one checkpoint, in an exact index."""

    checkpoint: str
    artist_ids: list[str]
    centroids: np.ndarray  # float32 [A, D]
    counts: np.ndarray  # int64 [A]
    index: Any

    def neighbors(self, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(similarity [A, k], neighbour positions [A, k]) excluding the artist itself."""
        import numpy as np

        kk = min(k + 1, len(self.artist_ids))
        sims, pos = self.index.search(self.centroids, kk)
        out_s = np.full((len(pos), k), np.nan, dtype=np.float32)
        out_p = np.full((len(pos), k), -1, dtype=np.int64)
        for i in range(len(pos)):
            keep = pos[i] != i
            row_p, row_s = pos[i][keep][:k], sims[i][keep][:k]
            row_p, row_s = row_p[row_p >= 0], row_s[row_p >= 0]
            out_p[i, : len(row_p)] = row_p
            out_s[i, : len(row_s)] = row_s
        return out_s, out_p

    def search(self, vecs: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        """Nearest artists to query vectors (an uploaded image, a text)."""
        import numpy as np

        sims, pos = self.index.search(np.ascontiguousarray(np.atleast_2d(vecs), dtype=np.float32), min(k, len(self.artist_ids)))
        return [[(self.artist_ids[p], float(s)) for s, p in zip(rs, rp, strict=True) if p >= 0] for rs, rp in zip(sims, pos, strict=True)]


def build_centroid_index(checkpoint: str, artist_ids: np.ndarray, vecs: np.ndarray) -> CentroidIndex:
    """Centroids of the images of one checkpoint, grouped by artist id (row-aligned)."""
    import faiss
    import numpy as np

    names, codes = np.unique(np.asarray(artist_ids, dtype=object), return_inverse=True)
    from evaluator.scoring.metrics import group_sums

    sums = group_sums(vecs, codes, len(names))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(centroids)
    return CentroidIndex(checkpoint, [str(n) for n in names], centroids, np.bincount(codes), index)
