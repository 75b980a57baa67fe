"""One FAISS index per embedding model over every image; FAISS ids are image ids.

Exact inner-product search (``IndexFlatIP``; vectors are L2-normalised, so inner
product = cosine) until the index would hold ``ivf_threshold`` vectors; past that an
IVF index (``IndexIVFFlat``, inner product) with ~4·sqrt(N) lists found by an HNSW
coarse quantizer (the layout ``IVF{n}_HNSW32,Flat``) and trained with spherical
k-means (centroids on the unit sphere, as the vectors are). nprobe is tuned to the
target recall@10 on leave-one-out queries (sampled vectors whose own id is removed
from both the exact and the approximate answer, so no query finds itself), and the
recall is recorded in ``index/<model>.json``.

Both are wrapped in ``IndexIDMap2`` (ids = image ids, ``reconstruct`` by id), new
images are added without a rebuild (an IVF keeps its trained centroids), and the file
is written atomically: a reader sees the old index or the new one, never half of one.

Reads ``embeddings/<model>/part-*.parquet``; writes ``index/<model>.faiss`` and its
``index/<model>.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from evaluator.embedding.clip import LoadedClip
    from evaluator.workspace.workdir import Workdir


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
    train_size: int = 100_000
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
    kind: str  # flat | ivf
    ntotal: int
    dim: int
    added: int
    nlist: int | None = None
    layout: str | None = None  # the faiss index_factory string, e.g. IVF2048_HNSW32,Flat
    train_size: int | None = None  # vectors the centroids were trained on
    nprobe: int | None = None
    recall_at_10: float | None = None
    recall_queries: int | None = None
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
    at most one per 39 training vectors, trained on up to 256 vectors per list."""
    import math

    train = min(n, config.train_size)
    nlist = max(1, min(int(config.ivf_nlist_factor * math.sqrt(n)), train // 39))
    return nlist, min(train, 256 * nlist)


def _new_ivf(vecs: np.ndarray, config: IndexConfig) -> tuple[Any, int]:
    """An untrained-then-trained ``IVF{nlist}_HNSW{M},Flat`` (inner product) in an
    ``IndexIDMap2``; the centroids come from spherical k-means on a sample, assigned
    exactly during training (an HNSW over moving centroids would be rebuilt every
    iteration) and then put in the HNSW quantizer that routes queries and adds."""
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
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True  # the quantizer holds the trained centroids
    _set_nprobe(ivf, config.nprobe)
    ivf.make_direct_map(True)  # reconstruct by id through IndexIDMap2
    # the faiss wrappers keep `quantizer` and `ivf` referenced by the objects built on them
    return faiss.IndexIDMap2(ivf), nlist


def _set_nprobe(ivf: Any, nprobe: int) -> None:
    """nprobe, and an HNSW quantizer's efSearch wide enough to return that many lists."""
    import faiss

    ivf.nprobe = int(nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):  # HNSW returns at most efSearch lists
        quantizer.hnsw.efSearch = max(64, 2 * int(nprobe))


def ivf_layout_name(index: Any) -> str | None:
    """The index_factory string of an IVF index (``IVF2048_HNSW32,Flat``), None if exact."""
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


def tune_nprobe(index: Any, vecs: np.ndarray, ids: np.ndarray, config: IndexConfig) -> tuple[int, float]:
    """Raise nprobe along ``nprobe_ladder`` until leave-one-out recall@10 reaches
    target_recall + recall_margin (or every list is probed); returns (nprobe, recall).
    The exact neighbours are computed once; each step is one approximate search."""
    ivf = _ivf_of(index)
    queries, exact, own = _query_sample(vecs, ids, 10, config.recall_queries, config.seed)
    goal = min(1.0, config.target_recall + config.recall_margin)
    for nprobe in nprobe_ladder(config.nprobe, ivf.nlist):
        _set_nprobe(ivf, nprobe)
        recall = recall_against(index, queries, exact, own)
        if recall >= goal:
            break
    return nprobe, recall


def save_index(index: Any, path: Path, info: IndexInfo) -> None:
    import faiss

    from catalog.atomic import atomic_path, atomic_write_text

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write_text(meta_path(path), json.dumps(asdict(info), indent=2) + "\n")


def load_index(workdir: Workdir, model: str) -> tuple[Any, dict]:
    """The saved index of ``model`` and its metadata; a clear error if none was built."""
    import faiss

    path = workdir.index(model)
    if not path.is_file():
        raise FileNotFoundError(f"no FAISS index for model {model!r} at {path}; run `atelier index build` or `atelier score`")
    index = faiss.read_index(str(path))
    ivf = _ivf_of(index)
    meta = json.loads(meta_path(path).read_text(encoding="utf-8")) if meta_path(path).is_file() else {}
    if ivf is not None and meta.get("nprobe"):
        _set_nprobe(ivf, int(meta["nprobe"]))
    return index, meta


def update_index(
    workdir: Workdir,
    model: str,
    config: IndexConfig | None = None,
    rebuild: bool = False,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
) -> IndexInfo:
    """Add every embedded image missing from the model's index; switch to IVF past the threshold.

    ``embeddings``: ``load_embeddings`` output when the caller has it already (a
    million vectors are 2 GB; read them once). Returns what was done (kind, ntotal,
    recall@10 when approximate).
    """
    import numpy as np

    from evaluator.embedding.images import load_embeddings

    cfg = config or IndexConfig()
    start = time.perf_counter()
    path = workdir.index(model)
    ids, vecs = embeddings if embeddings is not None else load_embeddings(workdir, model)
    dim = vecs.shape[1] if vecs.ndim == 2 and len(vecs) else 0
    index, meta = (None, {})
    if path.is_file() and not rebuild:
        index, meta = load_index(workdir, model)
        if dim and index.d != dim:
            index, meta = None, {}  # the model changed shape: start over
    present = _ids_in(index) if index is not None else np.zeros(0, dtype=np.int64)
    missing = ~np.isin(ids, present)
    kind = meta.get("kind", "flat")
    nlist = meta.get("nlist")
    new_ivf = False
    if index is None or (kind == "flat" and len(ids) >= cfg.ivf_threshold):
        if len(ids) >= cfg.ivf_threshold:
            index, nlist = _new_ivf(vecs, cfg)
            kind, new_ivf = "ivf", True
        else:
            index = _new_flat(dim or 1)
            kind = "flat"
        missing = np.ones(len(ids), dtype=bool)
    added = int(missing.sum())
    if added:
        index.add_with_ids(np.ascontiguousarray(vecs[missing], dtype=np.float32), ids[missing])
    recall = meta.get("recall_at_10") if not added else None
    n_q = meta.get("recall_queries")
    nprobe = meta.get("nprobe") or cfg.nprobe
    if kind == "ivf" and (added or recall is None):
        nprobe, recall = tune_nprobe(index, vecs, ids, cfg)
        n_q = min(cfg.recall_queries, len(ids))
    elif kind == "flat":
        recall, n_q = 1.0, 0
    info = IndexInfo(
        model=model,
        kind=kind,
        ntotal=int(index.ntotal),
        dim=int(index.d),
        added=added,
        nlist=nlist,
        layout=ivf_layout_name(index) if kind == "ivf" else "Flat",
        train_size=(meta.get("train_size") if not new_ivf else ivf_layout(len(ids), cfg)[1]) if kind == "ivf" else None,
        nprobe=nprobe if kind == "ivf" else None,
        recall_at_10=recall,
        recall_queries=n_q,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    info.seconds = time.perf_counter() - start
    if added or not path.is_file() or kind != meta.get("kind"):
        save_index(index, path, info)
    return info


def record_index_run(workdir: Workdir, info: IndexInfo, config: IndexConfig, timeout: float = 120.0) -> str:
    """A ``runs`` row (kind='index') with the index's recall, written in one transaction,
    and its JSON under ``runs/``. Returns the run id."""
    import uuid

    import pandas as pd

    from evaluator.workspace.records import Provenance, RunRecord, utcnow
    from evaluator.workspace.store import open_store, transaction, upsert_df

    now = utcnow()
    record = RunRecord(
        run_id=f"index-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", kind="index",
        provenance=Provenance.collect(device="cpu", dtype="float32"),  # FAISS runs on the CPU in float32
        started_at=now, finished_at=now, config=asdict(config), timings={"seconds": round(info.seconds, 3)},
        n_done=info.added, n_skipped=info.ntotal - info.added, message=json.dumps(asdict(info)),
    )
    with open_store(workdir.store, timeout=timeout) as con, transaction(con):
        upsert_df(con, "runs", pd.DataFrame([record.row()]), ["run_id"])
    record.write(workdir)
    return record.run_id


# ------------------------------------------------------------------ search


def search_by_vector(index: Any, vecs: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [Q, k], image ids [Q, k]); -1 ids pad when the index is small."""
    import numpy as np

    if k < 1:
        raise InputError(f"k must be >= 1 but is {k}")
    q = np.ascontiguousarray(np.atleast_2d(vecs), dtype=np.float32)
    if q.shape[1] != index.d:
        raise InputError(f"query has dimension {q.shape[1]} but the index has {index.d}")
    return index.search(q, k)


def search_by_image_id(workdir: Workdir, model: str, image_id: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    index, _ = load_index(workdir, model)
    try:
        vec = index.reconstruct(int(image_id))
    except RuntimeError as exc:
        raise KeyError(f"image id {image_id} is not in the index of model {model!r}") from exc
    return search_by_vector(index, vec, k)


def search_by_text(workdir: Workdir, clip: LoadedClip, text: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    from evaluator.embedding.text import embed_texts, text_cache_dir

    if not text.strip():
        raise InputError("text must be non-empty")
    index, _ = load_index(workdir, clip.key)
    vec = embed_texts(clip, [text], cache_dir=text_cache_dir(workdir, clip.key))
    return search_by_vector(index, vec, k)


def search_by_image_file(
    workdir: Workdir, clip: LoadedClip, path: str | Path, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    from evaluator.embedding.images import embed_image_files

    index, _ = load_index(workdir, clip.key)
    return search_by_vector(index, embed_image_files(clip, [path]), k)


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
