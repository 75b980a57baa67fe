"""``--index-memory``: choose the index by measurement within a memory budget.

Past ~10M vectors an IVF with flat storage (4·dim bytes a vector: 20 GB at 10M x 512)
does not fit a laptop, so a budget picks among candidates, as autofaiss does for
clip-retrieval, but by measuring each one that fits:

- ``ivf``: ``IVF{n}_HNSW32,Flat``, the default past the exact threshold; fastest, all
  vectors in memory;
- ``ivfsq``: ``IVF{n}_HNSW32,SQ8`` (one byte a dimension, a quarter of the float32)
  whose candidates are re-ranked exactly by an ``IndexRefineFlat``; the refine vectors
  are memory-mapped from the index file when it is loaded for search, so only the codes
  and ids count against the budget (the page cache holds what queries touch). At 1M x 512
  clustered vectors it had the recall of ``ivf`` at every nprobe (0.986 at nprobe 3) and
  answered in 0.20 ms a query against ``ivf``'s 0.22, in 0.55 GB instead of 2.1;
- ``ivfpq``: ``IVF{n}_HNSW32,PQ{dim/8}``, re-ranked the same way, for budgets too small
  for ``ivfsq`` (64 bytes a vector at d 512); coarser codes, so more probes for the
  same recall;
- ``hnsw``: ``HNSW32`` (flat storage plus a graph), for stores that grow by small adds:
  there are no centroids to go stale.

Each candidate's resident bytes are estimated before anything is built; those over the
budget are skipped with their estimate, the others are built, tuned to the target recall
on the same leave-one-out queries and timed one query at a time. The fastest that meets
the target is chosen; if none does, the one with the best recall, with a warning
(``evaluator.embedding.index.choose_within``; this module builds nothing).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evaluator.errors import InputError

if TYPE_CHECKING:
    import numpy as np

# IndexIDMap2: 8 bytes of id and ~40 of reverse hash map a vector; an IVF list entry's id.
ID_BYTES = 48
LIST_ID_BYTES = 8
HNSW_M = 32  # neighbours a node: level 0 holds 2*M int32 links, upper levels ~1/M of that
RERANK_FACTOR = 10  # PQ candidates re-ranked per neighbour to start tuning from (k=10: 100)
# SQ8 candidates re-ranked per neighbour to start from: at 1M x 512 clustered vectors k_factor 2, 4 and
# 10 gave the same recall at every nprobe (0.14, 0.15, 0.18 ms a query at nprobe 2); 4
# leaves room for data whose dimensions spread wider than 8 bits resolve.
SQ_RERANK_FACTOR = 4
KINDS = ("ivf", "ivfsq", "ivfpq", "hnsw")
# IVF kinds whose codes are approximate, re-ranked from float32 vectors kept in the file
REFINED_KINDS = ("ivfsq", "ivfpq")
IVF_KINDS = ("ivf", *REFINED_KINDS)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str, option: str = "--index-memory") -> int:
    """Bytes in ``512MB``, ``2GB``, ``1.5GiB`` or ``2000000``; a clear error otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS:
        raise InputError(f"{option} must be a size like 512MB or 2GB but is {text!r} (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InputError(f"{option} must be more than 0 bytes but is {text!r}")
    return size


def layout_string(kind: str, nlist: int | None, dim: int, m: int = HNSW_M) -> str:
    """The index_factory string of a kind: ``IVF2048_HNSW32,Flat``, ``HNSW32,Flat``..."""
    return {"flat": "Flat", "ivf": f"IVF{nlist}_HNSW{m},Flat", "ivfsq": f"IVF{nlist}_HNSW{m},SQ8,RFlat",
            "ivfpq": f"IVF{nlist}_HNSW{m},PQ{pq_subquantizers(dim)},RFlat",
            "hnsw": f"HNSW{m},Flat"}[kind]


def human_size(size: float) -> str:
    """``243KB``, ``2.1GB``: decimal units, as ``--index-memory`` reads them."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{int(size)}B"


def pq_subquantizers(dim: int) -> int:
    """PQ sub-vectors: 8 dimensions each (64 bytes a vector at d 512), a divisor of dim."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


def estimate_bytes(kind: str, n: int, dim: int, nlist: int) -> int:
    """Resident bytes of an index of ``kind`` over ``n`` vectors, before building it."""
    centroids = nlist * (4 * dim + 2 * HNSW_M * 4 + 16)
    per_vector = {
        "flat": 4 * dim,
        "ivf": 4 * dim + LIST_ID_BYTES + 8,  # + the direct map (reconstruct by id)
        "ivfsq": dim + LIST_ID_BYTES,
        "ivfpq": pq_subquantizers(dim) + LIST_ID_BYTES,
        "hnsw": 4 * dim + int(2 * HNSW_M * 4 * (1 + 1 / HNSW_M)) + 16,
    }[kind]
    codebook = {"ivfpq": 256 * dim * 4, "ivfsq": 2 * dim * 4}.get(kind, 0)  # PQ centroids; SQ8 per-dimension ranges
    return n * (per_vector + ID_BYTES) + (centroids if kind in IVF_KINDS else 0) + codebook


def disk_bytes(kind: str, n: int, dim: int) -> int:
    """Bytes memory-mapped from the index file at search time (not counted as resident)."""
    return 4 * dim * n if kind in REFINED_KINDS else 0


@dataclass
class Candidate:
    kind: str
    layout: str
    estimated_bytes: int
    status: str = "over budget"  # over budget | measured
    param: int | None = None  # nprobe (IVF kinds) or efSearch (HNSW)
    refine_factor: int | None = None  # IVF-SQ8 / IVF-PQ: candidates re-ranked per neighbour, as tuned
    recall_at_10: float | None = None
    ms_per_query: float | None = None
    build_seconds: float | None = None

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def single_query_ms(index: Any, queries: np.ndarray, n: int = 100) -> float:
    """Milliseconds a query, one query at a time on one thread (an interactive search)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            for i in range(min(n, len(queries))):
                index.search(queries[i : i + 1], 10)
            best = min(best, time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
    return 1000 * best / min(n, len(queries))


def candidates_within(budget: int, n: int, dim: int, nlist: int) -> list[Candidate]:
    """Every candidate with its estimate; a clear error naming the option if none fits."""
    found = [Candidate(kind, layout_string(kind, nlist, dim), estimate_bytes(kind, n, dim, nlist)) for kind in KINDS]
    if not any(c.estimated_bytes <= budget for c in found):
        smallest = min(found, key=lambda c: c.estimated_bytes)
        raise InputError(f"--index-memory {human_size(budget)} is too small for {n:,} vectors of dim {dim}: "
                         f"the smallest candidate, {smallest.layout}, needs about {human_size(smallest.estimated_bytes)} "
                         f"({', '.join(f'{c.layout} {human_size(c.estimated_bytes)}' for c in found)}); "
                         "give a larger --index-memory or leave it out")
    return found
