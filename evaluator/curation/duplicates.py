"""Exact and near-duplicate groups, and which member of a group is kept.

Near-duplicate pairs come from perceptual hashes (each image has two: the whole picture
and its centre 90%, so a light crop of A still hashes near A's centre) searched in a
FAISS binary index by Hamming radius, and, when embeddings exist, from embedding pairs
with cosine >= ``near_cosine`` (a FAISS inner-product range search). Pairs are joined
into groups (union-find, so A~B and B~C put A, B, C in one group). In each group the
kept image is the largest (width x height), then the earliest (first seen, then path):
the documented rule. Every other member's ``duplicate_of`` is the kept one's SHA-256,
and every member's ``duplicate_group`` is that same SHA-256, so a train/validation split
that keeps whole groups on one side can group by it. An image with no near duplicate is
its own group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

QUERY_CHUNK = 8192  # queries per FAISS range search: bounds the result buffers


def hex_codes(hashes: list[str]) -> np.ndarray:
    """16-hex-digit hashes -> uint8 [N, 8] codes (FAISS binary layout)."""
    import numpy as np

    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(len(hashes), 8).copy()


def hash_pairs(full: np.ndarray, centre: np.ndarray, radius: int) -> dict[tuple[int, int], int]:
    """{(i, j): bits} for i < j whose full or centre hashes lie within ``radius`` bits.

    Queries the full hashes against an index of full + centre hashes (FAISS
    IndexBinaryFlat range search, exact); a pair found from either side counts once,
    with its smallest distance.
    """
    import faiss
    import numpy as np

    n = len(full)
    pairs: dict[tuple[int, int], int] = {}
    if n < 2:
        return pairs
    index = faiss.IndexBinaryFlat(64)
    index.add(np.concatenate([full, centre]))
    for start in range(0, n, QUERY_CHUNK):
        lims, dist, ids = index.range_search(full[start:start + QUERY_CHUNK], radius + 1)
        for q in range(len(lims) - 1):
            i = start + q
            for d, j in zip(dist[lims[q]:lims[q + 1]], ids[lims[q]:lims[q + 1]] % n, strict=True):
                if j != i:
                    key = (min(i, int(j)), max(i, int(j)))
                    pairs[key] = min(int(d), pairs.get(key, 64))
    return pairs


def hash_pairs_naive(full: list[int], centre: list[int], radius: int) -> dict[tuple[int, int], int]:
    """The all-pairs reference of :func:`hash_pairs` (tests and the benchmark's baseline)."""
    pairs: dict[tuple[int, int], int] = {}
    for i in range(len(full)):
        for j in range(i + 1, len(full)):
            d = min((full[i] ^ full[j]).bit_count(), (full[i] ^ centre[j]).bit_count(),
                    (centre[i] ^ full[j]).bit_count())
            if d <= radius:
                pairs[(i, j)] = d
    return pairs


def embedding_pairs(vecs: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """{(i, j): cosine} for i < j with cosine >= threshold (rows L2-normalised first)."""
    import faiss
    import numpy as np

    x = np.ascontiguousarray(vecs, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pairs: dict[tuple[int, int], float] = {}
    if len(x) < 2:
        return pairs
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, ids = index.range_search(x, float(threshold) - 1e-6)
    for i in range(len(x)):
        for s, j in zip(sims[lims[i]:lims[i + 1]], ids[lims[i]:lims[i + 1]], strict=True):
            if j > i and s >= threshold - 1e-6:
                pairs[(i, int(j))] = float(s)
    return pairs


@dataclass(frozen=True)
class Member:
    """What the kept-image rule reads of one image."""

    sha256: str
    pixels: int
    first_seen: str  # ISO time the content was first curated (earlier wins)
    path: str


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def group_members(members: list[Member], pairs) -> list[tuple[str, str | None]]:
    """Per member, (duplicate_group, duplicate_of): both the kept member's SHA-256 (None
    for the kept one's own duplicate_of)."""
    parent = list(range(len(members)))
    for i, j in pairs:
        ri, rj = _find(parent, i), _find(parent, j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(members)):
        groups.setdefault(_find(parent, i), []).append(i)
    out: list[tuple[str, str | None]] = [("", None)] * len(members)
    for idx in groups.values():
        kept = min(idx, key=lambda k: (-members[k].pixels, members[k].first_seen, members[k].path))
        keep_sha = members[kept].sha256
        for k in idx:
            out[k] = (keep_sha, None if k == kept else keep_sha)
    return out
