"""Batched IVF search whose coarse assignment is one BLAS matmul against every centroid.

atelier's IVF has an HNSW coarse quantizer because it finds a single query's nearest
lists in a few dozen distance computations. A batch gets no such gain: faiss walks the
graph query by query. On 300k clustered vectors (IVF2190_HNSW32,Flat, nprobe 2, 2 cores)
the walks took 38 of a 1,000-query batch's 69 ms; the quantizer's own flat storage
searched as one BLAS matmul, then the lists scanned (``search_preassigned``, parallel over
queries) took 38 ms in all: 250 queries 9.6 against 15.4 ms, 100 queries 8.7 against 5.4
(under faiss's BLAS size, ``queries x dim >= 128,000``, the flat search is no matmul). The
matmul finds the exact nearest lists, so recall is at least the HNSW quantizer's.

Which is faster depends on the lists (the matmul grows with them, the walk hardly) and on
the machine's BLAS, so ``assign_timing`` measures both when the index is built and the
index's meta records the choice (``batch_assign``); ``search_by_vector`` follows it for
batches of at least ``min_batch(dim)`` queries. The centroids are searched by faiss, not
numpy: numpy's BLAS threads spin after a matmul and took the cores from faiss's scan
(67 ms for a scan that takes 28 alone). A re-ranked IVF (SQ8, PQ behind faiss's
``IndexRefineFlat``, which takes no assignment) gets its ``k_factor * k`` candidates from
the assigned lists and re-ranks them here by exact dot products with the float32 vectors,
as ``IndexRefineFlat`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MATMUL = "matmul"  # the meta's batch_assign when the matmul measured faster
PARALLEL_OVER_QUERIES = 3  # IndexIVF.parallel_mode: search_preassigned splits the queries among threads
RERANK_BLOCK = 256  # queries re-ranked at once: 256 x 400 candidates x 512 dims of float32 is 210 MB


def min_batch(dim: int) -> int:
    """The smallest batch worth the matmul: faiss's flat search is one only from its BLAS size."""
    from evaluator.embedding.index_exact import blas_batch_size

    return blas_batch_size(dim)


def _centroid_index(ivf: Any) -> Any:
    """The flat index holding an IVF's centroids (an HNSW quantizer's storage, or the quantizer)."""
    import faiss

    quantizer = faiss.downcast_index(ivf.quantizer)
    flat = faiss.downcast_index(quantizer.storage) if isinstance(quantizer, faiss.IndexHNSW) else quantizer
    if not isinstance(flat, faiss.IndexFlat):
        raise TypeError(f"no centroids to read from a {type(flat).__name__} quantizer")
    return flat


def centroids(ivf: Any) -> np.ndarray:
    """The coarse centroids [nlist, d] of an IVF, a view of its quantizer's float32 storage."""
    from evaluator.embedding.index_exact import flat_vectors

    return flat_vectors(_centroid_index(ivf))


def assign_by_matmul(ivf: Any, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, list numbers) [Q, nprobe], best first: every query's ``ivf.nprobe``
    nearest centroids by inner product, exactly (faiss's flat search: one BLAS matmul
    from its BLAS size)."""
    flat = _centroid_index(ivf)
    return flat.search(queries, min(int(ivf.nprobe), flat.ntotal))


def _refine_and_ivf(index: Any) -> tuple[Any | None, Any | None]:
    """(the ``IndexRefine`` under an ``IndexIDMap2``, or None; the IndexIVF it searches, or
    None when the index has no IVF to assign lists to)."""
    import faiss

    inner = getattr(index, "index", None)
    if inner is None:
        return None, None
    inner = faiss.downcast_index(inner)
    refine = inner if isinstance(inner, faiss.IndexRefine) else None
    ivf = faiss.downcast_index(refine.base_index) if refine is not None else inner
    return refine, (ivf if isinstance(ivf, faiss.IndexIVF) else None)


def search_assigned(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [Q, k], image ids [Q, k]) of an ``IndexIDMap2`` over an IVF (or an
    ``IndexRefineFlat`` over one), its lists chosen by ``assign_by_matmul``; -1 ids pad as
    faiss pads."""
    import faiss
    import numpy as np

    from evaluator.embedding.index_exact import external_ids

    refine, ivf = _refine_and_ivf(index)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    coarse_sims, lists = assign_by_matmul(ivf, q)
    if ivf.parallel_mode != PARALLEL_OVER_QUERIES:  # the default, 0, scans them on one thread here
        ivf.parallel_mode = PARALLEL_OVER_QUERIES  # search() is as fast either way (measured), its results the same
    wanted = k if refine is None else k * max(1, int(refine.k_factor))
    sims, internal = ivf.search_preassigned(q, wanted, lists, coarse_sims)
    if refine is not None:
        sims, internal = rerank(faiss.downcast_index(refine.refine_index), q, internal, k)
    return sims, external_ids(index, internal)


def rerank(flat: Any, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's ``candidates`` (internal ids, -1 for none) by exact
    inner product with ``flat``'s float32 vectors, best first."""
    import numpy as np

    from evaluator.embedding.index_exact import flat_vectors

    vecs = flat_vectors(flat)
    sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for s in range(0, len(queries), RERANK_BLOCK):
        cand = candidates[s : s + RERANK_BLOCK]
        exact = np.einsum("qd,qcd->qc", queries[s : s + RERANK_BLOCK], vecs[np.maximum(cand, 0)])
        exact[cand < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(exact, order, axis=1)
        sims[s : s + RERANK_BLOCK, : top.shape[1]] = top
        ids[s : s + RERANK_BLOCK, : top.shape[1]] = np.where(np.isfinite(top), np.take_along_axis(cand, order, axis=1), -1)
    return sims, ids


def can_assign(index: Any) -> bool:
    """Whether ``search_assigned`` applies: an ``IndexIDMap2`` over an IndexIVF, or over
    an ``IndexRefine`` whose base is one."""
    return _refine_and_ivf(index)[1] is not None


def assign_timing(index: Any, queries: np.ndarray, k: int = 10) -> tuple[str | None, dict]:
    """(``MATMUL`` if the matmul assignment answered one batch of ``queries`` (repeated up
    to ``min_batch``) faster than the index's own search, else None; the timings), best
    of two each."""
    from evaluator.embedding.index_exact import best_seconds, tiled

    if not can_assign(index) or not len(queries):
        return None, {}
    batch = tiled(queries, min_batch(index.d))
    own = best_seconds(lambda: index.search(batch, k))
    matmul = best_seconds(lambda: search_assigned(index, batch, k))
    timing = {"batch": len(batch), "quantizer_ms_per_query": round(1000 * own / len(batch), 4),
              "matmul_ms_per_query": round(1000 * matmul / len(batch), 4)}
    return (MATMUL if matmul < own else None), timing
