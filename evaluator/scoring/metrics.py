"""The metrics registry, and the vectorised metric functions behind it.

Every metric of DESIGN.md is registered with its definition, direction, whether it
needs reference images, and its level:

- ``image``: one value per image (``image_scores``); aggregated per (checkpoint, artist)
  as the mean of per-seed means with a bootstrap CI over seeds (``artist_scores``) and
  per checkpoint the same way (``checkpoint_scores``);
- ``artist``: one value per (checkpoint, artist) computed from all its images;
- ``checkpoint``: one value per checkpoint.

The registry drives the scoring run (``evaluator.scoring.aggregate``): it computes each
level's metrics from :func:`list_metrics`, skips the ``needs_references`` ones when there
are no reference images, and compares base and fine-tune on the ``per_seed`` ones (image
metrics through their per-seed means, artist metrics through their ``seed_values``).

The functions take plain numpy arrays so each can be checked against a naive loop.
Reads and writes nothing: the scoring run builds an :class:`EvalInputs` and stores results.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evaluator.errors import InputError, StateError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

LEVELS = ("image", "artist", "checkpoint")
# Identification readouts: raw cosine, or cross-domain similarity local scaling.
READOUTS = ("cosine", "csls")
# Ranking against one prototype is always rank 1: identification needs two classes.
MIN_PROTOTYPE_CLASSES = 2


@dataclass(frozen=True)
class Metric:
    name: str
    definition: str
    higher_is_better: bool
    needs_references: bool
    level: str
    fn: Callable[..., Any]
    # image metrics and per-seed artist metrics can be compared base vs fine-tune with
    # a paired bootstrap over seeds; the others have no per-seed value.
    per_seed: bool = True
    # An artist metric's per-seed values: (checkpoint, artist_id, seed, value) rows, the
    # observations its CI and the comparisons bootstrap over. Image metrics need none
    # (their per-seed value is the mean of the seed's images).
    seed_values: Callable[..., Any] | None = None
    # An artist metric's per-image values: (checkpoint, artist_id, image_id, seed, value)
    # rows. With them, images without a seed can still be compared (bootstrap over images).
    image_values: Callable[..., Any] | None = None
    # What the metric needs besides images (references, prompt, baselines, seeds,
    # labels, catalog): `atelier metrics list` and the README say so, and `score` names
    # the metrics a run could not compute for want of one (evaluator.scoring.notices).
    needs: tuple[str, ...] = ()
    # An identification metric's number of candidate classes N (chance = 1/N), stored
    # beside its rows as ``n_classes``: a top-1 means nothing without it. One number, or
    # each image's own N (float [N], NaN: no class) when class sets differ by kind; a row
    # then gets the N its images share (NULL when they mix).
    n_classes: Callable[..., int | np.ndarray | None] | None = None
    # The smallest change of the metric's value that counts (in its own units): a
    # fine-tune whose delta's CI excludes 0 but whose delta is smaller than this is
    # `kept`, not gained or lost. With enough seeds a paired bootstrap finds every change
    # (a LoRA moves every prompt's images a little), and across 30,000 styles a verdict
    # for each negligible shift would bury the real ones. 0 = any significant change.
    min_effect: float = 0.0


# Smallest changes that count, by the metric's scale (users set their own with
# `atelier score --min-effect METRIC=VALUE`):
# half a point of cosine: under method-level differences of reference similarity in
# DreamBooth-style evaluations (about 2 points between methods)
COSINE_MIN_EFFECT = 0.005
# one percentage point of a rate or a mean reciprocal rank
RATE_MIN_EFFECT = 0.01
# CLIPScore is 100 x cosine: the same half point
CLIP_SCORE_MIN_EFFECT = 0.5
# one place in the ranking of catalog artists
RANK_MIN_EFFECT = 1.0
# LAION's aesthetic scale runs 1-10; 0.05 is under a rater's resolution
AESTHETIC_MIN_EFFECT = 0.05


class UnknownMetricError(InputError, KeyError):
    """A metric name the registry does not know (still a KeyError for older callers)."""


_REGISTRY: dict[str, Metric] = {}


def register_metric(
    name: str,
    definition: str,
    higher_is_better: bool,
    needs_references: bool = False,
    level: str = "image",
    per_seed: bool = True,
    *,
    seed_values: Callable[..., Any] | None = None,
    image_values: Callable[..., Any] | None = None,
    needs: tuple[str, ...] = (),
    n_classes: Callable[..., int | None] | None = None,
    min_effect: float = 0.0,
) -> Callable:
    """Decorator: add a metric function to the registry under ``name``.

    Refuses a name already taken (two metrics would write the same rows) and a per-seed
    artist metric without ``seed_values`` (the comparisons would have nothing to pair).
    """
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)} but is {level!r}")
    if per_seed and level == "checkpoint":
        raise InputError(f"metric {name!r}: a checkpoint metric has no per-seed value (pass per_seed=False)")
    if per_seed and level == "artist" and seed_values is None:
        raise InputError(f"metric {name!r}: a per-seed artist metric needs seed_values (or pass per_seed=False)")
    check_min_effect(name, min_effect)

    def decorate(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise InputError(f"metric {name!r} is already registered")
        wants = tuple(dict.fromkeys((*(("references",) if needs_references else ()), *needs)))
        _REGISTRY[name] = Metric(name, definition, higher_is_better, needs_references, level, fn, per_seed, seed_values,
                                 image_values, wants, n_classes, float(min_effect))
        return fn

    return decorate


def list_metrics(level: str | None = None, *, has_references: bool = True) -> list[Metric]:
    """The registered metrics of ``level`` (all levels: None), in registration order.

    ``has_references=False`` leaves out the metrics that need reference images: with
    none there is nothing for them to compute.
    """
    return [
        m for m in _REGISTRY.values()
        if (level is None or m.level == level) and (has_references or not m.needs_references)
    ]


def seed_metrics(level: str) -> list[Metric]:
    """The metrics of ``level`` that have a value per seed (what comparisons pair)."""
    return [m for m in list_metrics(level) if m.per_seed]


def get_metric(name: str) -> Metric:
    """The metric called ``name``; a typo gets the close names suggested."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(_REGISTRY)}"
        raise UnknownMetricError(f"unknown metric {name!r}{hint}") from None


def check_min_effect(name: str, value: object) -> float:
    """``value`` as a metric's smallest change that counts: a finite number >= 0."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputError(f"min_effect of {name!r} must be a finite number >= 0 but is {value!r}")
    return float(value)


def default_min_effects() -> dict[str, float]:
    """Each comparable (per-seed) metric's smallest change that counts, from the registry."""
    return {m.name: m.min_effect for m in _REGISTRY.values() if m.per_seed}


def resolve_min_effects(overrides: dict[str, float] | None) -> dict[str, float]:
    """The registry's smallest changes with ``overrides`` on top; ``all`` sets every metric.

    Unknown names are refused with the close ones suggested (a typo would otherwise leave
    the default in force without a word).
    """
    out = default_min_effects()
    overrides = dict(overrides or {})
    if "all" in overrides:
        every = check_min_effect("all", overrides.pop("all"))
        out = dict.fromkeys(out, every)
    for name, value in overrides.items():
        metric = get_metric(name)
        if not metric.per_seed:
            raise InputError(f"metric {name!r} has no per-seed value, so no comparison to set a min_effect for")
        out[name] = check_min_effect(name, value)
    return out


def metrics_table() -> str:
    """The registry as a fixed-width text table (``atelier metrics list``)."""
    rows = [("name", "level", "better", "refs", "needs", "min effect", "definition")]
    for m in _REGISTRY.values():
        rows.append((m.name, m.level, "higher" if m.higher_is_better else "lower", "yes" if m.needs_references else "no",
                     ",".join(m.needs) or "-", f"{m.min_effect:g}" if m.per_seed else "-", m.definition))
    cols = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(cols)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(r[j].ljust(widths[j]) for j in range(cols)) + "  " + r[cols])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(lines)


# ------------------------------------------------------------------ pure functions


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two L2-normalised matrices (a dot product per row)."""
    import numpy as np

    return np.einsum("ij,ij->i", a, b, dtype=np.float64)


def clip_score_values(image_vecs: np.ndarray, text_vecs: np.ndarray) -> np.ndarray:
    """CLIPScore: 100 · max(cos(image, its prompt), 0)."""
    import numpy as np

    return 100.0 * np.maximum(cosine_rows(image_vecs, text_vecs), 0.0)


def identification_ranks(
    image_vecs: np.ndarray, class_vecs: np.ndarray, true_idx: np.ndarray, chunk: int = 1024,
    class_penalty: np.ndarray | None = None, precision: str = "auto",
) -> np.ndarray:
    """Rank (1 = best) of each image's true class among all classes; NaN where unknown.

    Ties count in the image's favour (rank = 1 + number of classes strictly more similar),
    so identical text embeddings do not punish an image. ``true_idx`` < 0 marks images of
    no catalog class. With ``class_penalty`` (:func:`csls_penalty`) the readout is CSLS
    instead of cosine. Every comparison is decided in float64; the matmul that finds the
    candidates runs in bfloat16 where the CPU has it (``precision``; see
    :mod:`evaluator.scoring.ranking`), so the ranks do not depend on the machine.
    """
    from evaluator.scoring.ranking import exact_ranks

    return exact_ranks(image_vecs, class_vecs, true_idx, chunk=chunk, class_penalty=class_penalty,
                       precision=precision)


def average_precision_at_k(
    query_vecs: np.ndarray,
    query_labels: np.ndarray,
    db_vecs: np.ndarray,
    db_labels: np.ndarray,
    k: int = 10,
) -> np.ndarray:
    """AP@k of each query against a labelled database (style-retrieval protocol).

    AP@k = (1 / min(k, R)) · Σ_{i ≤ k} precision@i · rel(i), R = relevant items in the
    database. NaN when the query's label has no item in the database.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 but is {k}")
    return average_precision_at_ks(query_vecs, query_labels, db_vecs, db_labels, (k,))[k]


# float32's unit roundoff: a D-term dot product of float32 vectors computed in float32, in any
# order, is within gamma_D = D u / (1 - D u) of |x| |y| of its exact value (Higham, Thm 3.5).
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def csls_top_k(class_vecs: np.ndarray, pool_vecs: np.ndarray, k: int = 10, chunk: int = 2048) -> np.ndarray:
    """float64 [C, min(k, P)]: each class's ``k`` largest cosines to the pool, descending.

    The values are float64 dot products, so they do not depend on the chunking, the BLAS or
    the machine, and the top-k of several pools' top-k's is the top-k of their union: ranks of a
    launch each take a share of the pool (:func:`csls_penalty_of_parts` merges them). A
    float32 matmul finds the candidates; every vector whose float32 cosine is within twice
    its rigorous error bound of the running k-th is recomputed in float64.
    """
    import numpy as np

    classes = np.ascontiguousarray(class_vecs, dtype=np.float32)
    pool = np.asarray(pool_vecs, dtype=np.float32)
    k = min(int(k), len(pool))
    if k < 1 or len(classes) == 0:
        return np.zeros((len(classes), max(k, 0)))
    dim = classes.shape[1]
    gamma = dim * FLOAT32_UNIT_ROUNDOFF / (1 - dim * FLOAT32_UNIT_ROUNDOFF)
    slack = 2 * gamma * np.linalg.norm(classes, axis=1) * float(np.linalg.norm(pool, axis=1).max())
    best = np.full((len(classes), k), -np.inf, dtype=np.float32)  # each class's running top k (float32)
    found = _Candidates()
    for s in range(0, len(pool), chunk):
        sims = classes @ np.ascontiguousarray(pool[s : s + chunk]).T
        kth = best.min(axis=1)
        # the k-th only rises, so a cosine under (running k-th - slack) stays out to the end
        c, j = np.nonzero(sims >= _floor32(kth - slack)[:, None])
        if np.isinf(kth).any() or len(c) > sims.size // 8:  # early on: most of the chunk enters
            best = np.partition(np.concatenate([best, sims], axis=1), -k, axis=1)[:, -k:]
            c, j = np.nonzero(sims >= _floor32(best.min(axis=1) - slack)[:, None])
            found.add(c, j + s, sims[c, j], _floor32(best.min(axis=1) - slack), 4 * len(classes) * k)
            continue
        vals = sims[c, j]
        entering = vals > kth[c]
        best = _with_entering(best, c[entering], vals[entering])
        found.add(c, j + s, vals, _floor32(best.min(axis=1) - slack), 4 * len(classes) * k)
    cls, idx = found.at_least(_floor32(best.min(axis=1) - slack))
    exact = _float64_dots(classes, pool, cls, idx)
    order = np.lexsort((-exact, cls))  # by class, then largest first
    cls, exact = cls[order], exact[order]
    first = np.searchsorted(cls, np.arange(len(classes)))  # every class has >= k: its float32 top k
    return exact[first[:, None] + np.arange(k)[None, :]]


def _with_entering(best: np.ndarray, cls: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """``best`` (each row's k largest) with ``vals`` of rows ``cls`` merged in: only the rows
    that gain a value are partitioned again, padded to their longest list."""
    import numpy as np

    if not len(cls):
        return best
    k = best.shape[1]
    order = np.argsort(cls, kind="stable")
    cls, vals = cls[order], vals[order]
    rows, start, counts = np.unique(cls, return_index=True, return_counts=True)
    padded = np.full((len(rows), k + int(counts.max())), -np.inf, dtype=best.dtype)
    padded[:, :k] = best[rows]
    padded[np.repeat(np.arange(len(rows)), counts), k + np.arange(len(cls)) - np.repeat(start, counts)] = vals
    best = best.copy()
    best[rows] = np.partition(padded, -k, axis=1)[:, -k:]
    return best


def _float64_dots(classes: np.ndarray, pool: np.ndarray, cls: np.ndarray, idx: np.ndarray,
                  block: int = 16384) -> np.ndarray:
    """cos(class ``cls[i]``, pool row ``idx[i]``) in float64, a block of pairs at a time (each
    row summed on its own, so the value of a pair does not depend on the block)."""
    import numpy as np

    out = np.empty(len(cls))
    for s in range(0, len(cls), block):
        a = classes[cls[s : s + block]].astype(np.float64)
        b = pool[idx[s : s + block]].astype(np.float64)
        out[s : s + block] = (a * b).sum(axis=1)
    return out


def _floor32(values: np.ndarray) -> np.ndarray:
    """float64 thresholds as float32, rounded down (a float32 comparison never drops a candidate)."""
    import numpy as np

    rounded = values.astype(np.float32)
    return np.where(rounded > values, np.nextafter(rounded, np.float32(-np.inf)), rounded)


class _Candidates:
    """(class, pool row, float32 cosine) triples kept while the pool is read, pruned to each
    class's current floor whenever they pass a bound (a pool read in rising order adds k a chunk)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.count = 0

    def add(self, cls: np.ndarray, idx: np.ndarray, val: np.ndarray, floor: np.ndarray, keep_at_most: int) -> None:
        self.parts.append((cls, idx, val))
        self.count += len(cls)
        if self.count > keep_at_most:
            self.parts = [self._at_least(floor)]
            self.count = len(self.parts[0][0])

    def at_least(self, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class, pool row) of every candidate at or above its class's ``floor``."""
        cls, idx, _ = self._at_least(floor)
        return cls, idx

    def _at_least(self, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import numpy as np

        cls, idx, val = (np.concatenate(column) for column in zip(*self.parts, strict=True))
        keep = val >= floor[cls]
        return cls[keep], idx[keep], val[keep]


def csls_penalty_of_parts(parts: list[np.ndarray], k: int = 10) -> np.ndarray:
    """CSLS's r(c) from :func:`csls_top_k` of each part of the pool: the mean of each class's
    ``k`` largest cosines of the parts together. float64 [C]; zeros with an empty pool."""
    import numpy as np

    both = np.concatenate(parts, axis=1)
    if both.shape[1] == 0:
        return np.zeros(len(both))
    top = -np.sort(-both, axis=1)[:, : min(int(k), both.shape[1])]  # descending: a fixed summation order
    return top.mean(axis=1)


def class_matrix_key(class_vecs: np.ndarray) -> tuple:
    """A class matrix's identity for penalties computed ahead: its shape, dtype and bytes' digest."""
    import hashlib

    import numpy as np

    data = np.ascontiguousarray(class_vecs)
    return data.shape, str(data.dtype), hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def csls_penalty(class_vecs: np.ndarray, pool_vecs: np.ndarray, k: int = 10, chunk: int = 2048) -> np.ndarray:
    """CSLS's hubness term r(c): the mean cosine of each class to its ``k`` nearest pool vectors.

    CSLS(x, c) = 2 cos(x, c) - r(c) - r(x) (Conneau et al. 2018): a "hub" class, close
    to many images at once, is marked down by its own neighbourhood density. r(x) is the
    same for every class of one image, so ranking needs only r(c). float64 [C]; zeros
    with an empty pool. The same as the parts of a split pool merged, bit for bit.
    """
    return csls_penalty_of_parts([csls_top_k(class_vecs, pool_vecs, k, chunk)], k)


def top_k_stable(sims: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest values, best first, ties by position:
    what a stable full sort gives, from ``np.partition`` (no [rows, columns] sort)."""
    import numpy as np

    if k >= sims.shape[1]:
        return np.argsort(-sims, axis=1, kind="stable")
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    greater = sims > kth[:, None]
    equal = sims == kth[:, None]
    need = k - greater.sum(axis=1)
    tied = np.flatnonzero(equal.sum(axis=1) > need)  # more equal to the k-th than places left
    if len(tied):  # keep the first ones by position (rare with float similarities)
        equal[tied] &= np.cumsum(equal[tied], axis=1, dtype=np.int32) <= need[tied, None]
    idx = np.nonzero(greater | equal)[1].reshape(len(sims), k)  # ascending column per row
    order = np.argsort(-np.take_along_axis(sims, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def average_precision_at_ks(
    query_vecs: np.ndarray, query_labels: np.ndarray, db_vecs: np.ndarray, db_labels: np.ndarray, ks: tuple[int, ...],
    chunk: int = 512,
) -> dict[int, np.ndarray]:
    """:func:`average_precision_at_k` for several k from one top-k selection of the
    database, ``chunk`` queries at a time (100k queries x 45k works never form one matrix)."""
    import numpy as np

    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1 but ks are {list(ks)}")
    nq = len(query_vecs)
    out = {k: np.full(nq, np.nan) for k in ks}
    if nq == 0 or len(db_vecs) == 0 or not ks:
        return out
    db_labels = np.asarray(db_labels, dtype=object)
    query_labels = np.asarray(query_labels, dtype=object)
    kmax = min(max(ks), len(db_vecs))
    db = np.ascontiguousarray(db_vecs, dtype=np.float32).T
    labels, counts = np.unique(db_labels, return_counts=True)
    total = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    r = np.array([total.get(q, 0) for q in query_labels], dtype=np.float64)
    for s in range(0, nq, chunk):
        sl = slice(s, s + chunk)
        top = top_k_stable(np.asarray(query_vecs[sl], dtype=np.float32) @ db, kmax)
        rel = (db_labels[top] == query_labels[sl, None]).astype(np.float64)
        hits = np.cumsum(rel * (np.cumsum(rel, axis=1) / np.arange(1, kmax + 1)), axis=1)
        for k in ks:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k][sl] = hits[:, min(k, kmax) - 1] / np.minimum(k, r[sl])
    for k in ks:
        out[k][r == 0] = np.nan
    return out


def discrimination_gaps(ref_vecs: np.ndarray, ref_artist: np.ndarray) -> dict[str, np.ndarray]:
    """Per artist with references: each reference work's mean cosine to the artist's other
    works minus its mean cosine to every other artist's works (float64 per work).

    Their mean is the *discrimination gap*: mean same-artist similarity minus mean
    different-artist similarity over reference works (each work has the same number of
    partners on each side, so the mean of per-work gaps is the mean over pairs).
    Negative: this encoder places the artist's works no closer to each other than to
    other artists'; it cannot tell the artist apart. NaN for an artist with one work,
    or when no other artist has references. From group sums, no pair matrix.
    """
    import numpy as np

    vecs = np.asarray(ref_vecs, dtype=np.float64)
    labels = np.asarray(ref_artist, dtype=object)
    names, codes = np.unique(labels, return_inverse=True)
    sums = group_sums(vecs, codes, len(names))
    counts = np.bincount(codes, minlength=len(names)).astype(np.float64)
    total, n_total = sums.sum(axis=0), float(len(vecs))
    self_sim = np.einsum("ij,ij->i", vecs, vecs)
    own = np.einsum("ij,ij->i", vecs, sums[codes])
    other = vecs @ total - own
    with np.errstate(invalid="ignore", divide="ignore"):
        same = (own - self_sim) / (counts[codes] - 1)
        cross = other / (n_total - counts[codes])
    gap = same - cross
    gap[(counts[codes] < 2) | (n_total - counts[codes] < 1)] = np.nan
    return {str(a): gap[codes == i] for i, a in enumerate(names)}


def group_sums(vecs: np.ndarray, codes: np.ndarray, n_groups: int, chunk: int = 65536) -> np.ndarray:
    """float64 [n_groups, D] sums of the rows of each group.

    Sort-and-``reduceat`` per chunk of rows: ``np.add.at`` is ~50x slower, and a float64
    copy of a million 512-d vectors (4 GB) is never made at once.
    """
    import numpy as np

    codes = np.asarray(codes, dtype=np.int64)
    sums = np.zeros((n_groups, vecs.shape[1]), dtype=np.float64)
    for s in range(0, len(codes), chunk):
        c = codes[s : s + chunk]
        if len(c) == 0:
            continue
        order = np.argsort(c, kind="stable")
        sorted_c = c[order]
        starts = np.flatnonzero(np.r_[True, sorted_c[1:] != sorted_c[:-1]])
        block = np.asarray(vecs[s : s + chunk], dtype=np.float64)[order]
        sums[sorted_c[starts]] += np.add.reduceat(block, starts, axis=0)
    return sums


def group_diversity(vecs: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean pairwise cosine distance within each group, and the group sizes.

    For unit vectors Σ_{i≠j} cos(v_i, v_j) = ||Σ v||² − n, so no pair is formed.
    Groups of fewer than 2 images get NaN.
    """
    import numpy as np

    sums = group_sums(vecs, codes, n_groups)
    sq = np.bincount(codes, weights=np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64), minlength=n_groups)
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_cos = ((sums**2).sum(axis=1) - sq) / (n * (n - 1))
    div = 1.0 - mean_cos
    div[n < 2] = np.nan
    return div, n.astype(np.int64)


def content_leak_values(
    vecs: np.ndarray, ckpt: np.ndarray, artist: np.ndarray, template: np.ndarray
) -> pd.DataFrame:
    """Per (checkpoint, artist): cross-artist same-template similarity minus
    same-artist cross-template similarity.

    Positive: an artist's images resemble other artists' images of the same subject
    more than its own images of other subjects, i.e. the subject leaks over the style.
    Negative: the style holds across subjects. Computed from group sums, no pairs.
    """
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"checkpoint": ckpt, "artist_id": artist, "template": template})
    cell = frame.groupby(["checkpoint", "artist_id", "template"], sort=True).ngroup().to_numpy()
    n_cells = int(cell.max()) + 1 if len(cell) else 0
    if n_cells == 0:
        return pd.DataFrame(columns=["checkpoint", "artist_id", "value", "n"])
    s_cell = group_sums(vecs, cell, n_cells)
    n_cell = np.bincount(cell, minlength=n_cells).astype(np.float64)
    cells = frame.assign(_c=cell).drop_duplicates("_c").sort_values("_c").reset_index(drop=True)
    # per (checkpoint, template) totals
    ct = cells.groupby(["checkpoint", "template"], sort=True).ngroup().to_numpy()
    s_ct = group_sums(s_cell, ct, int(ct.max()) + 1)
    n_ct = np.bincount(ct, weights=n_cell)
    # per (checkpoint, artist) totals
    ca = cells.groupby(["checkpoint", "artist_id"], sort=True).ngroup().to_numpy()
    n_ca_groups = int(ca.max()) + 1
    s_ca = group_sums(s_cell, ca, n_ca_groups)
    n_ca = np.bincount(ca, weights=n_cell, minlength=n_ca_groups)
    # cross-artist, same template: Σ_t s_{a,t}·(S_t − s_{a,t}) over n_{a,t}(N_t − n_{a,t}) pairs
    cross_sum = np.bincount(ca, weights=np.einsum("ij,ij->i", s_cell, s_ct[ct] - s_cell), minlength=n_ca_groups)
    cross_n = np.bincount(ca, weights=n_cell * (n_ct[ct] - n_cell), minlength=n_ca_groups)
    # same artist, different template: ||s_a||² − Σ_t ||s_{a,t}||² over n_a² − Σ_t n_{a,t}²
    within_sum = (s_ca**2).sum(axis=1) - np.bincount(ca, weights=(s_cell**2).sum(axis=1), minlength=n_ca_groups)
    within_n = n_ca**2 - np.bincount(ca, weights=n_cell**2, minlength=n_ca_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = cross_sum / cross_n - within_sum / within_n
    value[(cross_n == 0) | (within_n == 0)] = np.nan
    keys = cells.drop_duplicates(["checkpoint", "artist_id"])[["checkpoint", "artist_id"]].reset_index(drop=True)
    keys["value"] = value
    keys["n"] = n_ca.astype(np.int64)
    return keys


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two samples (rows = vectors).

    ||μx − μy||² + tr(Σx + Σy − 2 (Σx^½ Σy Σx^½)^½); the matrix square root through
    symmetric eigendecompositions (exact for PSD matrices, no complex round-off).
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"fd_clip needs at least 2 vectors on each side but has {len(x)} and {len(y)}")
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x = np.cov(x, rowvar=False)
    cov_y = np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(cov_x)
    sqrt_x = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = sqrt_x @ cov_y @ sqrt_x
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * tr_sqrt)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN if one class."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    keep = ~np.isnan(scores)
    scores, labels = scores[keep], labels[keep]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # mid-ranks: every member of a run of ties gets the run's average rank
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def label_to_bool(value: Any) -> bool | None:
    """The catalog's human recognition labels: Yes → True, No → False, else unknown."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("yes", "y", "true", "1"):
        return True
    if text in ("no", "n", "false", "0"):
        return False
    return None


# ------------------------------------------------------------------ inputs


@dataclass
class EvalInputs:
    """Everything the metrics read, aligned by row (one row per scored image)."""

    image_ids: np.ndarray  # int64 [N]
    vecs: np.ndarray  # float32 [N, D], L2-normalised
    checkpoint: np.ndarray  # object [N]
    artist_id: np.ndarray  # object [N]
    template: np.ndarray  # object [N]
    seed: np.ndarray  # int64 [N]
    prompt_vecs: np.ndarray | None  # float32 [N, D]: each image's own prompt
    catalog_ids: list[str]  # every catalog artist (the identification classes)
    artist_text_vecs: np.ndarray  # float32 [A, D]: the `art-by` text of each catalog artist
    ref_vecs: np.ndarray | None = None  # float32 [R, D] reference images
    ref_artist: np.ndarray | None = None  # object [R]
    labels: dict[str, dict[str, bool]] = field(default_factory=dict)  # label name -> artist -> bool
    baseline_artist: str = "_baseline"
    recognized_threshold: float = 0.0
    # The k of retrieval_map@k stored side by side (retrieval_map@1, @5, @10).
    retrieval_ks: tuple[int, ...] = (1, 5, 10)
    # How identification ranks classes: raw cosine, or CSLS (hubness-corrected, see
    # csls_penalty) with each class's r(c) over its csls_k nearest images of csls_pool
    # (every scored image of the run; None: the images at hand).
    readout: str = "cosine"
    csls_k: int = 10
    csls_pool: np.ndarray | None = None
    # r(c) of every class matrix of csls_class_matrices, computed ahead over the whole pool
    # (under a launcher each rank holds only its share of it; evaluator.scoring.run merges).
    csls_penalties: dict | None = None
    bootstrap: Any = None  # stats.BootstrapConfig
    # bool [N]: the image has a prompt (None: all have). An imported image without one
    # has no clip_score: the empty prompt's embedding is not its prompt.
    has_prompt: np.ndarray | None = None
    # An AUC from 65 positives against 2 negatives is noise: below this many of either
    # class it is NULL, with the counts in the row.
    min_auc_class: int = 5
    # Like with like (issue 15): an image is identified among the catalog rows of its own
    # artist's kind (artist | character), and, when its template prompts by Danbooru tag,
    # among the rows with a tag. None: every row is a class (a catalog without kinds).
    catalog_kinds: np.ndarray | None = None  # object [A]
    catalog_tagged: np.ndarray | None = None  # bool [A]
    tag_templates: frozenset[str] = frozenset()  # template names whose prompt takes {tag}
    # the embedding model's store key: the aesthetic metric needs a head made for that model
    model: str | None = None
    cache: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.image_ids)

    def true_index(self) -> np.ndarray:
        import numpy as np

        if "true_idx" not in self.cache:
            pos = {a: i for i, a in enumerate(self.catalog_ids)}
            self.cache["true_idx"] = np.array([pos.get(a, -1) for a in self.artist_id], dtype=np.int64)
        return self.cache["true_idx"]

    def artist_sim(self) -> np.ndarray:
        """cos(image, `art-by` text of its own artist); NaN for non-catalog artists."""
        import numpy as np

        if "artist_sim" not in self.cache:
            idx = self.true_index()
            sim = np.full(self.n, np.nan)
            ok = idx >= 0
            sim[ok] = cosine_rows(self.vecs[ok], self.artist_text_vecs[idx[ok]])
            self.cache["artist_sim"] = sim
        return self.cache["artist_sim"]

    def ranks(self) -> np.ndarray:
        if "ranks" not in self.cache:
            self.cache["ranks"] = self._grouped_ranks()
        return self.cache["ranks"]

    def class_groups(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """(group of each image, -1 without a class; catalog rows of each group).

        One group of every row when the catalog has no kinds (the old behaviour)."""
        import numpy as np

        if "class_groups" in self.cache:
            return self.cache["class_groups"]
        true = self.true_index()
        if self.catalog_kinds is None:
            groups = (np.where(true >= 0, 0, -1), [np.arange(len(self.catalog_ids))])
        else:
            kinds = np.asarray(self.catalog_kinds, dtype=object)
            tagged = np.ones(len(kinds), bool) if self.catalog_tagged is None else np.asarray(self.catalog_tagged, bool)
            booru = np.isin(self.template, list(self.tag_templates)) if self.tag_templates else np.zeros(self.n, bool)
            keys = [(kinds[t], bool(b)) if t >= 0 else None for t, b in zip(true.tolist(), booru.tolist(), strict=True)]
            distinct = sorted({k for k in keys if k is not None})
            code = {k: i for i, k in enumerate(distinct)}
            sets = [np.flatnonzero((kinds == kind) & (tagged if by_tag else True)) for kind, by_tag in distinct]
            groups = (np.array([code[k] if k is not None else -1 for k in keys], dtype=np.int64), sets)
        self.cache["class_groups"] = groups
        return groups

    def class_counts(self) -> np.ndarray:
        """Each image's number of candidate classes N (chance 1/N); NaN without a class."""
        import numpy as np

        group, sets = self.class_groups()
        sizes = np.array([len(s) for s in sets] + [np.nan], dtype=np.float64)
        return sizes[group]  # -1 picks the trailing NaN

    def _grouped_ranks(self) -> np.ndarray:
        """Ranks of each image among its group's classes (an image outside every group: NaN)."""
        import numpy as np

        group, sets = self.class_groups()
        true = self.true_index()
        ranks = np.full(self.n, np.nan)
        for g, rows in enumerate(sets):
            images = np.flatnonzero(group == g)
            if not len(images):
                continue
            local = np.full(len(self.catalog_ids), -1, dtype=np.int64)
            local[rows] = np.arange(len(rows))
            classes = self.artist_text_vecs if len(rows) == len(self.catalog_ids) else self.artist_text_vecs[rows]
            ranks[images] = identification_ranks(self.vecs[images], classes, local[true[images]],
                                                 class_penalty=self.readout_penalty(classes))
        return ranks

    def readout_penalty(self, class_vecs: np.ndarray) -> np.ndarray | None:
        """None for the cosine readout; CSLS's r(c) of each class for ``readout = 'csls'``."""
        if self.readout == "cosine":
            return None
        if self.readout != "csls":
            raise InputError(f"readout must be one of {', '.join(READOUTS)} but is {self.readout!r}")
        if self.csls_penalties is not None:
            key = class_matrix_key(class_vecs)
            if key not in self.csls_penalties:
                raise StateError("CSLS's r(c) was not computed ahead for a class matrix of "
                                 f"{len(class_vecs)} classes: csls_class_matrices misses one the metrics use")
            return self.csls_penalties[key]
        pool = self.csls_pool if self.csls_pool is not None else self.vecs
        return csls_penalty(class_vecs, pool, self.csls_k)

    def csls_class_matrices(self) -> list[np.ndarray]:
        """Every class matrix ``readout_penalty`` can be asked for, from the catalog and the
        references alone (not from which images are at hand, so every rank lists the same):
        each (kind, by tag) group's rows, or the whole catalog, and the prototypes."""
        import numpy as np

        if self.catalog_kinds is None:
            row_sets = [np.arange(len(self.catalog_ids))]
        else:
            kinds = np.asarray(self.catalog_kinds, dtype=object)
            tagged = np.ones(len(kinds), bool) if self.catalog_tagged is None else np.asarray(self.catalog_tagged, bool)
            row_sets = [np.flatnonzero((kinds == kind) & (tagged if by_tag else True))
                        for kind in sorted(set(kinds.tolist())) for by_tag in (False, bool(self.tag_templates))]
        matrices = {}
        for rows in row_sets:
            if len(rows):
                classes = self.artist_text_vecs if len(rows) == len(self.catalog_ids) else self.artist_text_vecs[rows]
                matrices[class_matrix_key(classes)] = classes
        names, protos = self.prototype_classes()
        if len(names) >= MIN_PROTOTYPE_CLASSES:
            matrices[class_matrix_key(protos)] = protos
        return list(matrices.values())

    def prototype_classes(self) -> tuple[list[str], np.ndarray]:
        """The artists with references (sorted) and their prototypes as a [N, D] matrix."""
        import numpy as np

        protos = self.prototypes()
        names = sorted(protos)
        dim = self.vecs.shape[1] if self.vecs.ndim == 2 else 0
        return names, np.stack([protos[a] for a in names]) if names else np.zeros((0, dim), np.float32)

    def prototype_ranks(self) -> np.ndarray:
        """Rank of each image's own artist among the prototypes of every artist with
        references (NaN: its artist has none, or fewer than 2 artists have any)."""
        import numpy as np

        if "prototype_ranks" not in self.cache:
            names, protos = self.prototype_classes()
            if len(names) < MIN_PROTOTYPE_CLASSES:
                self.cache["prototype_ranks"] = np.full(self.n, np.nan)
            else:
                pos = {a: i for i, a in enumerate(names)}
                true = np.array([pos.get(a, -1) for a in self.artist_id], dtype=np.int64)
                self.cache["prototype_ranks"] = identification_ranks(
                    self.vecs, protos, true, class_penalty=self.readout_penalty(protos))
        return self.cache["prototype_ranks"]

    def prototypes(self) -> dict[str, np.ndarray]:
        import numpy as np

        if "prototypes" not in self.cache:
            protos: dict[str, np.ndarray] = {}
            if self.ref_vecs is not None and len(self.ref_vecs):
                # one pass over the works (a mask per artist is 9,000 x 45,000 comparisons)
                names, codes = np.unique(np.asarray(self.ref_artist, dtype=object), return_inverse=True)
                means = group_sums(self.ref_vecs, codes, len(names)) / np.bincount(codes)[:, None]
                norms = np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
                protos = dict(zip(names.tolist(), (means / norms).astype(np.float32), strict=True))
            self.cache["prototypes"] = protos
        return self.cache["prototypes"]

    def has_references(self) -> bool:
        return self.ref_vecs is not None and len(self.ref_vecs) > 0


# ------------------------------------------------------------------ image metrics


def _catalog_count(inp: EvalInputs) -> int | np.ndarray:
    """N of every image (one number), or each image's own N when the catalog has kinds."""
    return len(inp.artist_text_vecs) if inp.catalog_kinds is None else inp.class_counts()


@register_metric("clip_score", "100 * max(cos(image, its own prompt), 0): CLIPScore; NULL for an image without a prompt", True, needs=("prompt",), min_effect=CLIP_SCORE_MIN_EFFECT)
def _clip_score(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    if inp.prompt_vecs is None:
        return np.full(inp.n, np.nan)
    values = clip_score_values(inp.vecs, inp.prompt_vecs)
    if inp.has_prompt is not None:
        values = np.where(inp.has_prompt, values, np.nan)
    return values


@register_metric("artist_similarity", "cos(image, text of the `art-by` template for its artist): style without subject", True, needs=("catalog",), min_effect=COSINE_MIN_EFFECT)
def _artist_similarity(inp: EvalInputs) -> np.ndarray:
    return inp.artist_sim()


@register_metric("artist_rank", "rank (1 = best) of the true artist among every catalog artist, by cos(image, `art-by` text)", False, needs=("catalog",), n_classes=_catalog_count, min_effect=RANK_MIN_EFFECT)
def _artist_rank(inp: EvalInputs) -> np.ndarray:
    return inp.ranks()


@register_metric("top1", "1 if the true artist ranks first among every catalog artist (chance 1/N)", True, needs=("catalog",), n_classes=_catalog_count, min_effect=RATE_MIN_EFFECT)
def _top1(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    r = inp.ranks()
    return np.where(np.isnan(r), np.nan, (r <= 1).astype(float))


@register_metric("top5", "1 if the true artist ranks in the first 5 among every catalog artist (chance 5/N)", True, needs=("catalog",), n_classes=_catalog_count, min_effect=RATE_MIN_EFFECT)
def _top5(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    r = inp.ranks()
    return np.where(np.isnan(r), np.nan, (r <= 5).astype(float))


@register_metric("mrr", "1 / artist_rank; its mean is the mean reciprocal rank", True, needs=("catalog",), n_classes=_catalog_count, min_effect=RATE_MIN_EFFECT)
def _mrr(inp: EvalInputs) -> np.ndarray:
    return 1.0 / inp.ranks()


@register_metric("reference_similarity", "cos(image, prototype = normalised mean embedding of the artist's reference works)", True, needs_references=True, min_effect=COSINE_MIN_EFFECT)
def _reference_similarity(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    out = np.full(inp.n, np.nan)
    names, protos = inp.prototype_classes()
    pos = {a: i for i, a in enumerate(names)}
    idx = np.array([pos.get(a, -1) for a in inp.artist_id], dtype=np.int64)
    ok = idx >= 0
    out[ok] = cosine_rows(inp.vecs[ok], protos[idx[ok]])  # one pass, not a mask per artist
    return out


def _retrieval_maps(inp: EvalInputs) -> dict[int, np.ndarray]:
    """AP@k of every image for each k of ``inp.retrieval_ks``, from one sort (cached)."""
    import numpy as np

    if "retrieval_maps" not in inp.cache:
        out = {k: np.full(inp.n, np.nan) for k in inp.retrieval_ks}
        if inp.has_references():
            rows = np.isin(inp.artist_id, np.unique(inp.ref_artist))
            aps = average_precision_at_ks(inp.vecs[rows], inp.artist_id[rows], inp.ref_vecs, inp.ref_artist,
                                          tuple(inp.retrieval_ks))
            for k, values in aps.items():
                out[k][rows] = values
        inp.cache["retrieval_maps"] = out
    return inp.cache["retrieval_maps"]


DEFAULT_RETRIEVAL_KS = (1, 5, 10)


def register_retrieval_map(k: int) -> str:
    """Register ``retrieval_map@k`` (once; a run computes the ks of its ``retrieval_ks``)."""
    if not isinstance(k, int) or k < 1:
        raise InputError(f"retrieval k must be an integer >= 1 but is {k!r}")
    name = f"retrieval_map@{k}"
    if name not in _REGISTRY:
        def values(inp: EvalInputs) -> np.ndarray:
            import numpy as np

            return _retrieval_maps(inp)[k] if k in inp.retrieval_ks else np.full(inp.n, np.nan)

        register_metric(
            name, f"AP@{k} of the image as a query over all reference works (relevant = its artist's), divided by "
            f"min({k}, R), R = the artist's reference count; its mean is mAP@{k} (WikiArt protocol)", True,
            needs_references=True, min_effect=RATE_MIN_EFFECT)(values)
    return name


for _k in DEFAULT_RETRIEVAL_KS:
    register_retrieval_map(_k)


def _prototype_count(inp: EvalInputs) -> int:
    return len(inp.prototypes())


@register_metric("prototype_top1", "1 if the image's own artist has the most similar reference prototype among every artist with references (chance 1/N, N = n_classes); readout cosine or csls", True, needs_references=True, n_classes=_prototype_count, min_effect=RATE_MIN_EFFECT)
def _prototype_top1(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    r = inp.prototype_ranks()
    return np.where(np.isnan(r), np.nan, (r <= 1).astype(float))


@register_metric("prototype_top5", "1 if the image's own artist's prototype ranks in the first 5 among every artist with references (chance 5/N)", True, needs_references=True, n_classes=_prototype_count, min_effect=RATE_MIN_EFFECT)
def _prototype_top5(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    r = inp.prototype_ranks()
    return np.where(np.isnan(r), np.nan, (r <= 5).astype(float))


@register_metric("prototype_mrr", "1 / rank of the image's own artist among the reference prototypes; its mean is the mean reciprocal rank (chance ~ ln(N)/N)", True, needs_references=True, n_classes=_prototype_count, min_effect=RATE_MIN_EFFECT)
def _prototype_mrr(inp: EvalInputs) -> np.ndarray:
    return 1.0 / inp.prototype_ranks()


# ------------------------------------------------------------------ artist metrics


def _artist_frame(inp: EvalInputs, exclude_baseline: bool = True) -> tuple[np.ndarray, Any]:
    import numpy as np
    import pandas as pd

    keep = np.ones(inp.n, dtype=bool)
    if exclude_baseline:
        keep &= inp.artist_id != inp.baseline_artist
    frame = pd.DataFrame({"checkpoint": inp.checkpoint[keep], "artist_id": inp.artist_id[keep]})
    return keep, frame


@register_metric("diversity", "mean pairwise cosine distance between the images of (checkpoint, artist): low = mode collapse", True, level="artist", per_seed=False)
def _diversity(inp: EvalInputs) -> pd.DataFrame:
    keep, frame = _artist_frame(inp)
    codes = frame.groupby(["checkpoint", "artist_id"], sort=True).ngroup().to_numpy()
    keys = frame.assign(_c=codes).drop_duplicates("_c").sort_values("_c")[["checkpoint", "artist_id"]].reset_index(drop=True)
    div, n = group_diversity(inp.vecs[keep], codes, len(keys))
    keys["value"] = div
    keys["n"] = n
    return keys


@register_metric("content_leak", "mean cos to other artists' images of the same template minus mean cos to own images of other templates: > 0 = subject dominates style", False, level="artist", per_seed=False)
def _content_leak(inp: EvalInputs) -> pd.DataFrame:
    keep, _ = _artist_frame(inp)
    return content_leak_values(inp.vecs[keep], inp.checkpoint[keep], inp.artist_id[keep], inp.template[keep])


GAP_COLUMNS = ["checkpoint", "artist_id", "value", "n", "n_seeds", "ci_low", "ci_high", "ci_over", "reason"]


def _gap_reason(n_refs: int, others: int) -> str | None:
    if n_refs < 2:
        return f"{n_refs} reference work: the gap needs 2 or more"
    if others == 0:
        return "no other artist has reference works"
    return None


@register_metric("discrimination_gap", "over reference works: mean same-artist cosine minus mean different-artist cosine, CI over the artist's works; < 0 = this encoder cannot tell the artist apart (the same for every checkpoint)", True, needs_references=True, level="artist", per_seed=False)
def _discrimination_gap(inp: EvalInputs) -> pd.DataFrame:
    """One row per (checkpoint, artist) the checkpoint has images of: the reference
    works do not depend on the checkpoint, so each of its artists carries its own gap."""
    import numpy as np
    import pandas as pd

    from evaluator.scoring.stats import bootstrap_mean_ci

    if not inp.has_references():
        return pd.DataFrame(columns=GAP_COLUMNS)
    gaps = discrimination_gaps(inp.ref_vecs, inp.ref_artist)
    names = sorted(gaps)
    values = [gaps[a][~np.isnan(gaps[a])] for a in names]
    matrix = np.full((len(names), max([len(v) for v in values], default=1) or 1), np.nan)
    for i, v in enumerate(values):
        matrix[i, : len(v)] = v
    mean, _, lo, hi = bootstrap_mean_ci(matrix, inp.bootstrap)
    counts = {a: len(gaps[a]) for a in names}
    per_artist = pd.DataFrame({
        "artist_id": names, "value": mean, "n": [counts[a] for a in names], "n_seeds": np.nan,
        "ci_low": lo, "ci_high": hi, "ci_over": "references",
        "reason": [_gap_reason(counts[a], len(inp.ref_artist) - counts[a]) for a in names],
    })
    drawn = pd.DataFrame({"checkpoint": inp.checkpoint, "artist_id": inp.artist_id}).drop_duplicates()
    out = drawn.merge(per_artist, on="artist_id").sort_values(["checkpoint", "artist_id"], ignore_index=True)
    return out[GAP_COLUMNS]


MARGIN_IMAGE_COLUMNS = ["checkpoint", "artist_id", "image_id", "seed", "value"]


def _baseline_rows(base_sims: np.ndarray, base_seed: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Mean baseline similarity per known seed, plus the overall mean as the last row."""
    import numpy as np

    seeds = [s for s in np.unique(base_seed).tolist() if s >= 0]
    rows = [base_sims[base_seed == s].mean(axis=0) for s in seeds] + [base_sims.mean(axis=0)]
    return np.vstack(rows), {s: i for i, s in enumerate(seeds)}


def recognition_margin_images(inp: EvalInputs) -> pd.DataFrame:
    """Per image of an artist: its artist_similarity minus the mean similarity of the
    checkpoint's baseline (`null` template) images of the same seed to the same artist
    text; all baseline images when the seed has none or is unknown. A checkpoint
    without baseline images has no margins (``missing_baselines`` names it)."""
    import numpy as np
    import pandas as pd

    if "margin_images" in inp.cache:
        return inp.cache["margin_images"]
    sim, idx = inp.artist_sim(), inp.true_index()
    is_base = inp.artist_id == inp.baseline_artist
    parts = []
    for ckpt in sorted(set(inp.checkpoint.tolist())):
        in_ckpt = inp.checkpoint == ckpt
        base, arts = in_ckpt & is_base, in_ckpt & ~is_base & (idx >= 0)
        if not base.any() or not arts.any():
            continue
        classes, col = np.unique(idx[arts], return_inverse=True)
        table, row_of = _baseline_rows(inp.vecs[base] @ inp.artist_text_vecs[classes].T, inp.seed[base])
        seeds = inp.seed[arts]
        row = np.array([row_of.get(s, len(table) - 1) for s in seeds.tolist()], dtype=np.int64)
        parts.append(pd.DataFrame({
            "checkpoint": ckpt, "artist_id": inp.artist_id[arts], "image_id": inp.image_ids[arts],
            "seed": seeds, "value": sim[arts] - table[row, col],
        }))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MARGIN_IMAGE_COLUMNS)
    inp.cache["margin_images"] = out
    return out


def recognition_margins(inp: EvalInputs) -> pd.DataFrame:
    """Per (checkpoint, artist, seed): the mean margin of that seed's images (unknown
    seeds pooled under -1)."""
    per_image = recognition_margin_images(inp)
    if per_image.empty:
        return per_image.drop(columns="image_id")
    return per_image.groupby(["checkpoint", "artist_id", "seed"], sort=True)["value"].mean().reset_index()


def missing_baselines(inp: EvalInputs) -> list[str]:
    """Checkpoints with artist images but no baseline images: no recognition metrics."""
    is_base = inp.artist_id == inp.baseline_artist
    with_art = set(inp.checkpoint[~is_base & (inp.true_index() >= 0)].tolist())
    return sorted(str(c) for c in with_art - set(inp.checkpoint[is_base].tolist()))


@register_metric("recognition_margin", "mean over seeds of [artist_similarity of the artist's images - that of the same-seed `null`-template baseline images] (over images when no seed is known); needs baseline images", True, level="artist", seed_values=recognition_margins, image_values=recognition_margin_images, needs=("catalog", "baselines"), min_effect=COSINE_MIN_EFFECT)
def _recognition_margin(inp: EvalInputs) -> pd.DataFrame:
    from evaluator.scoring.stats import grouped_bootstrap

    margins = recognition_margin_images(inp)
    if margins.empty:
        return margins.assign(n=[], n_seeds=[], ci_low=[], ci_high=[], ci_over=[], reason=[]).drop(columns=["seed", "image_id"])
    # n counts images, n_seeds the known seeds; the CI is over seeds (or images without seeds)
    return grouped_bootstrap(margins, ["checkpoint", "artist_id"], config=inp.bootstrap, image_col="image_id")


@register_metric("recognized", "1 if the recognition_margin CI lies above the threshold, else 0; NULL (undecided) when the margin has no CI: 'this checkpoint knows this artist'", True, level="artist", per_seed=False, needs=("catalog", "baselines", "seeds"))
def _recognized(inp: EvalInputs) -> pd.DataFrame:
    import numpy as np

    margin = _recognition_margin(inp).copy()
    if margin.empty:
        return margin
    no_ci = margin["ci_low"].isna()
    margin["value"] = np.where(no_ci, np.nan, (margin["ci_low"] > inp.recognized_threshold).astype(float))
    margin["reason"] = [f"recognition_margin has no CI ({r})" if m else None
                        for r, m in zip(margin["reason"], no_ci, strict=True)]
    margin["ci_low"] = np.nan
    margin["ci_high"] = np.nan
    margin["ci_over"] = None
    return margin


# ------------------------------------------------------------------ checkpoint metrics


def auc_bootstrap_ci(scores: np.ndarray, labels: np.ndarray, config: Any = None) -> tuple[float, float]:
    """Percentile CI of the ROC AUC, resampling positives and negatives separately
    (stratified: every resample keeps both classes, so every resample has an AUC)."""
    import numpy as np

    from evaluator.scoring.stats import BootstrapConfig, percentile_ci

    cfg = config or BootstrapConfig()
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores, dtype=np.float64)[labels], np.asarray(scores, dtype=np.float64)[~labels]
    rng = np.random.default_rng(cfg.seed)
    y = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    boot = np.empty(cfg.n_boot)
    for b in range(cfg.n_boot):
        sample = np.r_[pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))]]
        boot[b] = roc_auc(sample, y)
    lo, hi = percentile_ci(boot[None, :], cfg.alpha)
    return float(lo[0]), float(hi[0])


AUC_COLUMNS = ["checkpoint", "value", "n", "n_pos", "n_neg", "ci_low", "ci_high", "ci_over", "reason", "n_artists"]


def _auc_for(inp: EvalInputs, label: str) -> pd.DataFrame:
    """Per checkpoint: AUC of the artists' margins against a human label, with the class
    counts and a CI over artists; NULL (with the reason) below ``min_auc_class`` of a class."""
    import numpy as np
    import pandas as pd

    margin = _recognition_margin(inp)
    labels = inp.labels.get(label, {})
    rows = []
    if margin.empty or not labels:
        return pd.DataFrame(columns=AUC_COLUMNS)
    for ckpt, part in margin.groupby("checkpoint", sort=True):
        known = part[part["artist_id"].isin(labels) & part["value"].notna()]
        y = known["artist_id"].map(labels).astype(bool).to_numpy()
        scores = known["value"].to_numpy(dtype=np.float64)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        row = {"checkpoint": ckpt, "value": np.nan, "n": len(known), "n_pos": n_pos, "n_neg": n_neg,
               "ci_low": np.nan, "ci_high": np.nan, "ci_over": None, "reason": None, "n_artists": len(known)}
        if min(n_pos, n_neg) < inp.min_auc_class:
            row["reason"] = f"n_pos = {n_pos}, n_neg = {n_neg}: fewer than {inp.min_auc_class} labelled artists of a class"
        else:
            row["value"] = roc_auc(scores, y)
            row["ci_low"], row["ci_high"] = auc_bootstrap_ci(scores, y, inp.bootstrap)
            row["ci_over"] = "artists"
        rows.append(row)
    return pd.DataFrame(rows, columns=AUC_COLUMNS)


@register_metric("recognized_auc_sdxl", "ROC AUC of recognition_margin against the catalog's human recognized_sdxl labels (Yes vs No), CI over artists; NULL below 5 of either class", True, level="checkpoint", per_seed=False, needs=("baselines", "labels"))
def _auc_sdxl(inp: EvalInputs) -> pd.DataFrame:
    return _auc_for(inp, "recognized_sdxl")


@register_metric("recognized_auc_sd1", "ROC AUC of recognition_margin against the catalog's human recognized_sd1 labels (Yes vs No), CI over artists; NULL below 5 of either class", True, level="checkpoint", per_seed=False, needs=("baselines", "labels"))
def _auc_sd1(inp: EvalInputs) -> pd.DataFrame:
    return _auc_for(inp, "recognized_sd1")


@register_metric("fd_clip", "Frechet distance in CLIP space between the checkpoint's images of artists with references and all reference works", False, needs_references=True, level="checkpoint", per_seed=False)
def _fd_clip(inp: EvalInputs) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    rows = []
    if not inp.has_references() or len(inp.ref_vecs) < 2:
        return pd.DataFrame(columns=["checkpoint", "value", "n"])
    with_refs = np.isin(inp.artist_id, np.unique(inp.ref_artist))
    for ckpt in sorted(set(inp.checkpoint.tolist())):
        rows_ck = (inp.checkpoint == ckpt) & with_refs
        if rows_ck.sum() < 2:
            continue
        rows.append({"checkpoint": ckpt, "value": frechet_distance(inp.vecs[rows_ck], inp.ref_vecs), "n": int(rows_ck.sum()),
                     "n_images": int(rows_ck.sum())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ aesthetic (curation, issue 14)


def aesthetic_head_for(model: str | None) -> Any:
    """LAION's aesthetic head for embeddings of ``model`` from $ATELIER_CACHE/aesthetic/, or None."""
    from evaluator.curation.aesthetic import find_head
    from evaluator.workspace import settings

    return find_head(model, None, settings.cache_dir()) if model else None


@register_metric("aesthetic", "LAION aesthetic score (v2 MLP on ViT-L/14, else the v1 linear head) of the image embedding; NULL unless the embedding model is an OpenAI CLIP with LAION's head file in $ATELIER_CACHE/aesthetic/", True, needs=("aesthetic_head",), min_effect=AESTHETIC_MIN_EFFECT)
def _aesthetic(inp: EvalInputs) -> np.ndarray:
    import numpy as np

    head = aesthetic_head_for(inp.model)
    if head is None or inp.n == 0:
        return np.full(inp.n, np.nan)
    return head.score(inp.vecs)
