"""Near-duplicate search (FAISS binary index) against the all-pairs loop, and the kept-image rule."""

from __future__ import annotations

import numpy as np

from evaluator.curation.duplicates import (
    Member,
    embedding_pairs,
    group_members,
    hash_pairs,
    hash_pairs_naive,
    hex_codes,
)


def _planted(n: int, seed: int):
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    centre = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    for i in range(0, n - 1, 7):  # plant neighbours at 0..14 bits, some through the centre hash
        flips = rng.choice(64, size=i % 15, replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        if i % 2:
            full[i + 1] = full[i] ^ mask
        else:
            full[i + 1] = centre[i] ^ mask
    return full, centre


def _hex(values) -> list[str]:
    return [f"{int(v):016x}" for v in values]


def test_the_index_finds_exactly_the_pairs_the_naive_loop_finds():
    full, centre = _planted(300, 0)
    for radius in (0, 6, 10):
        fast = hash_pairs(hex_codes(_hex(full)), hex_codes(_hex(centre)), radius)
        naive = hash_pairs_naive([int(v) for v in full], [int(v) for v in centre], radius)
        assert fast == naive
        assert len(fast) > (5 if radius else 0)


def test_hex_codes_keep_the_bit_order_of_the_hash():
    codes = hex_codes(["8000000000000001", "0000000000000000"])
    assert np.unpackbits(codes[0]).tolist() == [1] + [0] * 62 + [1]


def test_embedding_pairs_match_a_naive_cosine_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[10] = x[3] + 0.01
    x[20] = x[3] * 2  # same direction: cosine 1
    pairs = embedding_pairs(x, 0.94)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    naive = {(i, j) for i in range(60) for j in range(i + 1, 60) if unit[i] @ unit[j] >= 0.94}
    assert set(pairs) == naive and {(3, 10), (3, 20), (10, 20)} <= naive


def test_the_largest_member_is_kept_then_the_earliest():
    members = [
        Member("a", 100, "2026-01-02", "a.png"),
        Member("b", 400, "2026-01-03", "b.png"),  # largest: kept
        Member("c", 400, "2026-01-04", "c.png"),
        Member("d", 50, "2026-01-01", "d.png"),  # alone
        Member("e", 50, "2026-01-01", "f.png"),
        Member("f", 50, "2026-01-01", "e.png"),  # same size, same time: path e.png < f.png
    ]
    out = group_members(members, {(0, 1): 3, (1, 2): 5, (4, 5): 1})
    assert out[0] == ("b", "b") and out[1] == ("b", None) and out[2] == ("b", "b")
    assert out[3] == ("d", None)
    assert out[4] == ("f", "f") and out[5] == ("f", None)
