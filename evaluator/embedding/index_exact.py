"""Exact inner-product search over the vectors an approximate index already holds.

Every index atelier builds keeps the full float32 vectors somewhere: an IVF-Flat in its
inverted lists, an IVF-PQ behind its re-ranking ``IndexRefineFlat``, an HNSW in its flat
storage. Exact search over them is a chunked BLAS matmul with a running top-k, so the
ground truth for recall and the exact fallback for large batches need no second copy.

Why a batch fallback: faiss answers a batch of exact queries with one BLAS matmul once
``queries x dim >= 128,000`` (faiss 1.15; 250 queries at d 512: 2.8 vs 19.6 ms a query
below that), while an IVF scans its probed lists query by query. When the tuned index
probes many lists, exact BLAS answers a large batch sooner; ``batch_fallback`` measures
that on the tuning queries when the index is built and records the batch size from
which search goes exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# faiss 1.15 switches exact search to BLAS at queries * dim >= this (issue 19).
BLAS_QUERY_FLOATS = 128_000
BLOCK = 65_536  # vectors per matmul block: 128 MB of float32 at d 512
# Exact search is timed over at most this many vectors and scaled to the index (it is a
# matmul, linear in them): at 10M x 64 timing all of them, 2,000 queries twice, was 8 of a
# 15.5-minute build.
TIMED_VECTORS = 1_048_576


def blas_batch_size(dim: int) -> int:
    """The smallest batch faiss answers exactly with one BLAS matmul at ``dim``."""
    return max(1, math.ceil(BLAS_QUERY_FLOATS / max(1, dim)))


def topk_over_blocks(queries: np.ndarray, blocks: Iterator[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [Q, k], ids [Q, k]), best first, over (vectors, ids) blocks; ids -1
    and similarity -inf pad when fewer than k vectors exist."""
    import numpy as np

    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for vecs, ids in blocks:
        sims = queries @ np.ascontiguousarray(vecs, dtype=np.float32).T
        cand_s = np.concatenate([best_s, sims], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def flat_vectors(flat: Any) -> np.ndarray:
    import faiss

    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


def _ivf_blocks(ivf: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The IVF-Flat's stored vectors and their internal ids, gathered list by list into
    blocks of about ``BLOCK`` vectors (one matmul per list would be thousands of tiny ones)."""
    import faiss
    import numpy as np

    lists, dim = ivf.invlists, ivf.d
    vecs, ids, held = [], [], 0
    for lst in range(ivf.nlist):
        size = lists.list_size(lst)
        if not size:
            continue
        codes = faiss.rev_swig_ptr(lists.get_codes(lst), size * lists.code_size)
        vecs.append(np.frombuffer(codes, dtype=np.float32).reshape(size, dim))
        ids.append(faiss.rev_swig_ptr(lists.get_ids(lst), size).copy())
        held += size
        if held >= BLOCK:
            yield np.concatenate(vecs), np.concatenate(ids)
            vecs, ids, held = [], [], 0
    if vecs:
        yield np.concatenate(vecs), np.concatenate(ids)


def stored_blocks(inner: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(vectors, internal ids) blocks of every vector an index (below its IndexIDMap2) holds."""
    import faiss
    import numpy as np

    inner = faiss.downcast_index(inner)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.refine_index)
    elif isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if isinstance(inner, faiss.IndexIVF):
        yield from _ivf_blocks(inner)
        return
    if not isinstance(inner, faiss.IndexFlat):
        raise TypeError(f"no exact search over a {type(inner).__name__}: it does not keep the vectors")
    vecs = flat_vectors(inner)
    for s in range(0, len(vecs), BLOCK):
        yield vecs[s : s + BLOCK], np.arange(s, min(s + BLOCK, len(vecs)), dtype=np.int64)


def external_ids(index: Any, internal: np.ndarray) -> np.ndarray:
    """The image ids of an ``IndexIDMap2``'s internal ids (-1 stays -1), read through a
    view of its id map, not a copy of every id (80 MB at 10M vectors)."""
    import faiss
    import numpy as np

    id_map = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size())
    return np.where(internal >= 0, id_map[np.maximum(internal, 0)], -1)


def tiled(queries: np.ndarray, size: int) -> np.ndarray:
    """``queries`` repeated into one contiguous float32 batch of at least ``size`` rows
    (all of them when there are more): a timing batch as large as the path it times needs."""
    import numpy as np

    reps = math.ceil(size / max(1, len(queries)))
    return np.ascontiguousarray(np.tile(queries, (reps, 1))[: max(size, len(queries))], dtype=np.float32)


def exact_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact (similarities, image ids) from an ``IndexIDMap2``-wrapped index of any kind
    atelier builds, by BLAS over the vectors it stores."""
    import numpy as np

    q = np.ascontiguousarray(queries, dtype=np.float32)
    sims, internal = topk_over_blocks(q, stored_blocks(index.index), k)
    return sims, external_ids(index, internal)


def best_seconds(fn, repeat: int = 2) -> float:
    """The fastest of ``repeat`` timed calls of ``fn`` (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def exact_seconds(index: Any, queries: np.ndarray, k: int, timed_vectors: int = TIMED_VECTORS) -> tuple[float, int]:
    """(seconds ``exact_search`` takes for ``queries``, vectors timed): best of two over the
    first ``timed_vectors`` (whole blocks) of the index, scaled by ntotal / timed."""
    import itertools

    blocks = max(1, math.ceil(timed_vectors / BLOCK))
    timed = min(index.ntotal, blocks * BLOCK)

    def run() -> None:
        topk_over_blocks(queries, itertools.islice(stored_blocks(index.index), blocks), k)

    return best_seconds(run) * index.ntotal / max(1, timed), timed


def batch_fallback(index: Any, queries: np.ndarray, k: int = 10, timed_vectors: int = TIMED_VECTORS) -> tuple[int | None, dict]:
    """(batch size from which exact search is used, or None; the timings): one batch of
    at least the BLAS size, searched by the index and exactly (``exact_seconds``), best of
    two each."""
    size = blas_batch_size(index.d)
    batch = tiled(queries, size)
    approx = best_seconds(lambda: index.search(batch, k))
    exact, timed = exact_seconds(index, batch, k, timed_vectors)
    timing = {"batch": len(batch), "approx_ms_per_query": round(1000 * approx / len(batch), 4),
              "exact_ms_per_query": round(1000 * exact / len(batch), 4), "exact_vectors_timed": timed}
    return (size if exact < approx else None), timing
