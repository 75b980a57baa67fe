"""Exact identification ranks from a fast low-precision matmul and a bounded recheck.

An image's rank is 1 + the number of classes whose similarity strictly exceeds its true
class's, with every similarity decided in float64 (the float32 vectors' dot product, minus
the CSLS penalty where there is one). The matmul that finds them is the expensive part,
linear in the number of classes, so it runs in bfloat16 where the CPU multiplies bfloat16
natively (AVX512-BF16 or AMX: ~0.6 of float32's time here) and in float32 otherwise.

Neither is trusted blindly: each approximate similarity is within a proven bound of the
float64 one (input rounding by Cauchy-Schwarz on the rounding residuals, output rounding,
accumulation), so a class clearly above or below the true similarity is counted from the
matmul, and only the few inside the bound are recomputed in float64. A row with many such
classes (crowded classes, near-duplicate prompts) is redone with the float32 matmul, whose
bound is ~100x tighter. So the ranks are the same on every machine and at every batch composition, whichever
matmul ran; when a chunk's fallbacks and rechecks cost more than bfloat16 saves (close
similarities everywhere), the rest of the call runs in float32, so the low-precision path
costs at most about one chunk more than float32 alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PRECISIONS = ("auto", "bfloat16", "float32")
# bfloat16 keeps 8 significand bits: rounding to nearest moves a value by at most 2^-8 of it.
BF16_UNIT_ROUNDOFF = 2.0**-8
FLOAT32_UNIT_ROUNDOFF = 2.0**-24
# A row with more ambiguous classes than this share of them is cheaper to redo in float32
# than to recheck pair by pair (a gathered float64 dot costs ~50 matmul multiply-adds).
CROWDED_ROW_SHARE = 1 / 64
RECHECK_PAIR_COST = 50
# bfloat16's matmul takes ~0.6 of float32's here: when a chunk's fallbacks and rechecks cost
# more than this share of a float32 matmul, bfloat16 does not pay on this data, and the
# rest of the call runs in float32 (the ranks are the same either way).
GIVE_UP_COST = 0.3
# "auto" times its first chunk both ways and keeps the faster matmul for the rest (the
# ranks are the same either way; which is faster depends on the data as much as the CPU:
# close similarities everywhere make bfloat16's rechecks cost more than it saves). Calls
# shorter than this many chunks run in float32 without timing.
CALIBRATE_FROM_CHUNKS = 4
# bfloat16 is kept only when clearly faster: a chunk's timing is noisy on a shared machine.
PREFER_BF16_BELOW = 0.9
# Covers the float32 subtraction of the CSLS penalty and the float32 rounding of thresholds.
SLACK = 1e-6


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (else torch emulates it, slower)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} but is {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


def exact_dots(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """float64 dot of each row with its paired class (same arithmetic for every pair, so
    identical class vectors tie exactly and ties count in the image's favour)."""
    import numpy as np

    return np.einsum(
        "ij,ij->i", rows.astype(np.float64), classes.astype(np.float64), optimize=False
    )


@dataclass
class ClassMatrix:
    """The classes once, in float32 and (if used) bfloat16, with what the error bounds need."""

    f32: np.ndarray  # [C, D]
    f32_t: np.ndarray  # [D, C], for the float32 matmul
    norm_max: float  # max ||c||
    penalty: np.ndarray | None  # float32 [C] (CSLS r(c)), or None
    penalty64: np.ndarray | None
    bf16_t: object = None  # torch [D, C] bfloat16
    bf16_norm_max: float = 0.0  # max ||bf16(c)||
    bf16_residual_max: float = 0.0  # max ||c - bf16(c)||

    @classmethod
    def build(
        cls, class_vecs: np.ndarray, penalty: np.ndarray | None, bfloat16: bool
    ) -> ClassMatrix:
        import numpy as np

        f32 = np.ascontiguousarray(class_vecs, dtype=np.float32)
        pen = None if penalty is None else np.asarray(penalty, dtype=np.float32)
        matrix = cls(
            f32=f32,
            f32_t=np.ascontiguousarray(f32.T),
            norm_max=_max_norm(f32),
            penalty=pen,
            penalty64=None if pen is None else pen.astype(np.float64),
        )
        if bfloat16:
            import torch

            low = torch.from_numpy(f32).bfloat16()
            back = low.float().numpy()
            matrix.bf16_t = low.T.contiguous()
            matrix.bf16_norm_max = _max_norm(back)
            matrix.bf16_residual_max = _max_norm(f32.astype(np.float64) - back)
        return matrix


def _max_norm(vecs: np.ndarray) -> float:
    import numpy as np

    return float(np.linalg.norm(vecs, axis=1).max()) if len(vecs) else 0.0


@dataclass
class Approximate:
    """One chunk's approximate similarities [n, C] (CSLS applied) and each row's error bound."""

    sims: np.ndarray | None  # float32, or None while only ``bits`` exist
    bound: np.ndarray  # [n] float64: |approximate - float64| <= bound for every class of the row
    bits: np.ndarray | None = None  # the bfloat16 sims' bit patterns (int16), cosine readout only
    # output rounding relative to the value itself: |approximate - float64| <= bound + relative |approximate|
    relative: float = 0.0

    def as_float(self) -> np.ndarray:
        if self.sims is None:
            self.sims = bfloat16_to_float32(self.bits)
        return self.sims


def approximate_bf16(x: np.ndarray, m: ClassMatrix) -> Approximate:
    """bfloat16 in, bfloat16 out (fp32 accumulation): bound = input rounding + output rounding
    + accumulation, all scaled by the vectors' norms (a row's |sim| <= ||x~|| max||c~||)."""
    import numpy as np
    import torch

    low = torch.from_numpy(x).bfloat16()
    back = low.float().numpy().astype(np.float64)
    x_norm = np.linalg.norm(back, axis=1)
    x_residual = np.linalg.norm(x.astype(np.float64) - back, axis=1)
    top = x_norm * m.bf16_norm_max
    inputs = x_norm * m.bf16_residual_max + x_residual * m.norm_max
    accumulation = x.shape[1] * FLOAT32_UNIT_ROUNDOFF * top
    # rounding to bfloat16 moves the float32 sum A by <= u|A| <= u(|out| + |out - A|)
    relative = BF16_UNIT_ROUNDOFF / (1 - BF16_UNIT_ROUNDOFF)
    bits = (low @ m.bf16_t).view(torch.int16).numpy()
    if m.penalty is None:
        return Approximate(sims=None, bound=inputs + accumulation + SLACK, bits=bits, relative=relative)
    # CSLS 2 cos - r(c): the cosine's error doubles; |out| <= top bounds the output rounding
    bound = inputs + accumulation + relative * top
    return Approximate(sims=2 * bfloat16_to_float32(bits) - m.penalty, bound=2 * bound + SLACK)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (int16) as float32: the upper half of a float32 (exact), in
    numpy, which does it ~4x faster than torch's ``.float()`` here."""
    import numpy as np

    wide = bits.astype(np.int32)
    wide <<= 16
    return wide.view(np.float32)


def approximate_f32(x: np.ndarray, m: ClassMatrix) -> Approximate:
    """float32 matmul of the float32 vectors: only accumulation rounding."""
    import numpy as np

    sims = x @ m.f32_t
    bound = (
        (x.shape[1] + 2)
        * FLOAT32_UNIT_ROUNDOFF
        * np.linalg.norm(x.astype(np.float64), axis=1)
        * m.norm_max
    )
    if m.penalty is not None:
        sims = 2 * sims - m.penalty
        bound = 2 * bound
    return Approximate(sims=sims, bound=bound + SLACK)


def true_similarities(x: np.ndarray, m: ClassMatrix, true_idx: np.ndarray) -> np.ndarray:
    sims = exact_dots(x, m.f32[true_idx])
    return sims if m.penalty64 is None else 2 * sims - m.penalty64[true_idx]


@dataclass
class Window:
    """Per row, the thresholds that split a row's classes: above ``high`` surely above the
    true similarity, below ``low`` surely not, in between decided in float64.

    Compared in float32 (float64 would double the memory traffic), thresholds rounded
    outward so the window only widens; or, when every threshold is positive, straight on
    the bfloat16 bit patterns as int16 (a positive float's bits order like the float, a
    negative one's are negative integers), which skips converting the whole matrix.
    """

    high: np.ndarray  # [n, 1] float32, or int16 bfloat16 bits
    low: np.ndarray
    on_bits: bool = False

    @classmethod
    def around(cls, approx: Approximate, true: np.ndarray) -> Window:
        import numpy as np

        up, down = true + approx.bound, true - approx.bound
        if approx.relative:  # |error| <= bound + r|approximate|, solved for the approximate value
            r = approx.relative
            up = np.where(up >= 0, up / (1 - r), up / (1 + r))
            down = np.where(down >= 0, down / (1 + r), down / (1 - r))
        high = np.nextafter(up.astype(np.float32), np.float32(np.inf))
        low = np.nextafter(down.astype(np.float32), np.float32(-np.inf))
        if approx.bits is not None and len(low) and low.min() > 0:
            up = (high.view(np.int32).astype(np.int64) + 0xFFFF) >> 16  # smallest bfloat16 >= high
            down = low.view(np.int32) >> 16  # largest bfloat16 <= low
            return cls(
                high=up.astype(np.int16)[:, None], low=down.astype(np.int16)[:, None], on_bits=True
            )
        return cls(high=high[:, None], low=low[:, None])

    def values(self, approx: Approximate) -> np.ndarray:
        """What the thresholds compare against: the bit patterns, or the similarities
        (converted from the bits once, on first use)."""
        return approx.bits if self.on_bits else approx.as_float()

    def counts(self, approx: Approximate) -> tuple[np.ndarray, np.ndarray]:
        """(classes above, classes inside the window) of every row."""
        import numpy as np

        sims = self.values(approx)
        above = np.count_nonzero(sims > self.high, axis=1)
        return above, np.count_nonzero(sims >= self.low, axis=1) - above

    def inside(self, approx: Approximate, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, class) pairs inside the window, of the listed rows: the same comparisons as
        :meth:`counts`, so no class is counted twice or missed."""
        import numpy as np

        part = self.values(approx)[rows]
        r, c = np.nonzero((part >= self.low[rows]) & ~(part > self.high[rows]))
        return rows[r], c


# float64 rechecks are gathered this many pairs at a time (2 x 64 MB at 512 dims).
RECHECK_PAIRS = 16_384


def recheck(
    rows: np.ndarray,
    x: np.ndarray,
    idx: np.ndarray,
    approx: Approximate,
    window: Window,
    true: np.ndarray,
    m: ClassMatrix,
) -> tuple[np.ndarray, int]:
    """Per chunk row, how many classes of its window (other than its own) are above the true
    similarity in float64; and how many pairs that took."""
    import numpy as np

    extra = np.zeros(len(x), dtype=np.int64)
    pair_rows, pair_cols = window.inside(approx, rows)
    keep = pair_cols != idx[pair_rows]
    pair_rows, pair_cols = pair_rows[keep], pair_cols[keep]
    for s in range(0, len(pair_rows), RECHECK_PAIRS):
        r, c = pair_rows[s : s + RECHECK_PAIRS], pair_cols[s : s + RECHECK_PAIRS]
        sims = exact_dots(x[r], m.f32[c])
        if m.penalty64 is not None:
            sims = 2 * sims - m.penalty64[c]
        extra += np.bincount(r[sims > true[r]], minlength=len(x))
    return extra, len(pair_rows)


def chunk_ranks(x: np.ndarray, idx: np.ndarray, m: ClassMatrix, bfloat16: bool) -> tuple[np.ndarray, float]:
    """Ranks of one chunk's rows (all with a class), and what the float32 fallbacks and the
    float64 rechecks cost, as a share of one float32 matmul of the chunk."""
    import numpy as np

    true = true_similarities(x, m, idx)
    approx = approximate_bf16(x, m) if bfloat16 else approximate_f32(x, m)
    window = Window.around(approx, true)
    above, near = window.counts(approx)
    ranks = 1 + above
    crowded = np.zeros(len(x), dtype=bool)
    if bfloat16:
        crowded = near > max(16, CROWDED_ROW_SHARE * m.f32.shape[0])
        if crowded.any():
            ranks[crowded], _ = chunk_ranks(x[crowded], idx[crowded], m, bfloat16=False)
    todo = np.flatnonzero(~crowded & (near > 1))  # 1: the true class, always inside its own window
    extra, pairs = recheck(todo, x, idx, approx, window, true, m)
    cost = (crowded.sum() + RECHECK_PAIR_COST * pairs / m.f32.shape[0]) / max(1, len(x))
    return ranks + extra, float(cost)


def exact_ranks(
    image_vecs: np.ndarray,
    class_vecs: np.ndarray,
    true_idx: np.ndarray,
    chunk: int = 1024,
    class_penalty: np.ndarray | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Rank (1 = best) of each image's true class among all classes; NaN where ``true_idx`` < 0."""
    import numpy as np

    n = len(image_vecs)
    ranks = np.full(n, np.nan)
    true_idx = np.asarray(true_idx)
    if not n or not len(class_vecs):
        return ranks
    chosen = resolve_precision(precision)
    calibrate = precision == "auto" and chosen == "bfloat16" and n >= CALIBRATE_FROM_CHUNKS * chunk
    if precision == "auto" and not calibrate:
        chosen = "float32"
    bfloat16 = chosen == "bfloat16"
    m = ClassMatrix.build(class_vecs, class_penalty, bfloat16)
    for s in range(0, n, chunk):
        idx = true_idx[s : s + chunk]
        ok = idx >= 0
        if not ok.any():
            continue
        x = np.ascontiguousarray(image_vecs[s : s + chunk][ok], dtype=np.float32)
        if calibrate:  # the timing runs rank this chunk already
            calibrate = False
            bfloat16, part, cost = calibrated_chunk(x, idx[ok], m)
        else:
            part, cost = chunk_ranks(x, idx[ok], m, bfloat16)
        view = ranks[s : s + chunk]
        view[ok] = part
        if bfloat16 and cost > GIVE_UP_COST:
            bfloat16 = False
    return ranks


def calibrated_chunk(x: np.ndarray, idx: np.ndarray, m: ClassMatrix) -> tuple[bool, np.ndarray, float]:
    """Time one chunk with each matmul (the second run of each, so neither pays a warm-up):
    whether bfloat16 is clearly faster, and the chunk's ranks and cost under that choice
    (the ranks are the same under either)."""
    import time

    seconds, results = {}, {}
    for bfloat16 in (True, False, True, False):
        start = time.perf_counter()
        results[bfloat16] = chunk_ranks(x, idx, m, bfloat16)
        seconds[bfloat16] = time.perf_counter() - start
    chosen = seconds[True] < PREFER_BF16_BELOW * seconds[False]
    return chosen, *results[chosen]
