"""Identification ranks from a bfloat16 or float32 matmul with a float64 recheck
(evaluator.scoring.ranking): equal to a float64 reference on crowded classes, duplicate
classes, negative similarities and CSLS, whatever the chunking; and the error bound the
recheck relies on holds for every pair."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.scoring import ranking as R
from evaluator.scoring.metrics import identification_ranks

needs_bf16 = pytest.mark.skipif(
    not R.native_bfloat16(), reason="this CPU has no native bfloat16 matmul"
)
PRECISIONS = ["float32", pytest.param("bfloat16", marks=needs_bf16)]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_ranks(images, classes, true_idx, penalty=None) -> np.ndarray:
    """The definition, in float64: 1 + classes strictly more similar than the true one."""
    sims = images.astype(np.float64) @ classes.astype(np.float64).T
    if penalty is not None:
        sims = 2 * sims - np.asarray(penalty, dtype=np.float32).astype(np.float64)
    true = sims[np.arange(len(images)), true_idx]
    return (1 + (sims > true[:, None]).sum(axis=1)).astype(np.float64)


def crowded(seed=0, n_classes=3000, n_images=1500, dim=128):
    """Classes in 40 tight groups (many within the bfloat16 bound of each other), class 1 a
    copy of class 0, and the first images all of class 0."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    classes = unit(
        centres[rng.integers(0, 40, n_classes)] + 0.02 * rng.standard_normal((n_classes, dim))
    )
    classes[1] = classes[0]
    true_idx = rng.integers(0, n_classes, n_images)
    true_idx[:20] = 0
    images = unit(classes[true_idx] + 0.5 * rng.standard_normal((n_images, dim)) / np.sqrt(dim))
    return rng, images, classes, true_idx


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ranks_equal_the_float64_definition_on_crowded_and_duplicate_classes(precision):
    rng, images, classes, true_idx = crowded()
    want = reference_ranks(images, classes, true_idx)
    got = identification_ranks(images, classes, true_idx, precision=precision)
    np.testing.assert_array_equal(got, want)
    assert (want[:20] < want.max()).all()  # the copy of class 0 does not push its images down
    penalty = rng.uniform(0.0, 0.3, len(classes))
    got = identification_ranks(
        images, classes, true_idx, class_penalty=penalty, precision=precision
    )
    np.testing.assert_array_equal(got, reference_ranks(images, classes, true_idx, penalty))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ranks_with_negative_true_similarities_and_images_of_no_class(precision):
    """Unrelated images: half their true similarities are negative (the bit-pattern
    comparison does not apply there); true_idx -1 gives NaN."""
    rng = np.random.default_rng(3)
    classes, images = unit(rng.standard_normal((700, 64))), unit(rng.standard_normal((900, 64)))
    true_idx = rng.integers(0, 700, 900)
    true_idx[::7] = -1
    got = identification_ranks(images, classes, true_idx, precision=precision)
    known = true_idx >= 0
    assert np.isnan(got[~known]).all()
    np.testing.assert_array_equal(
        got[known], reference_ranks(images[known], classes, true_idx[known])
    )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ranks_do_not_depend_on_the_chunking(precision):
    _, images, classes, true_idx = crowded(seed=5)
    whole = identification_ranks(images, classes, true_idx, chunk=len(images), precision=precision)
    for chunk in (1, 97, 512):
        np.testing.assert_array_equal(
            identification_ranks(images, classes, true_idx, chunk=chunk, precision=precision), whole
        )


@needs_bf16
def test_auto_times_both_matmuls_on_a_long_call_and_ranks_the_same(monkeypatch):
    """Past CALIBRATE_FROM_CHUNKS chunks "auto" ranks its first chunk in the timing runs
    and the rest with the faster matmul; either way the ranks are the definition's."""
    _, images, classes, true_idx = crowded(seed=7)
    calls = []
    original = R.calibrated_chunk
    monkeypatch.setattr(R, "calibrated_chunk", lambda *a: calls.append(1) or original(*a))
    got = identification_ranks(images, classes, true_idx, chunk=len(images) // R.CALIBRATE_FROM_CHUNKS)
    assert calls == [1]
    np.testing.assert_array_equal(got, reference_ranks(images, classes, true_idx))


@needs_bf16
def test_crowded_rows_fall_back_to_float32_and_stay_exact():
    _, images, classes, true_idx = crowded(seed=2)
    m = R.ClassMatrix.build(classes, None, bfloat16=True)
    ranks, cost = R.chunk_ranks(images, true_idx, m, bfloat16=True)
    assert cost > R.GIVE_UP_COST  # so exact_ranks would carry on in float32
    np.testing.assert_array_equal(ranks, reference_ranks(images, classes, true_idx))


@pytest.mark.parametrize("bfloat16", [False, pytest.param(True, marks=needs_bf16)])
@pytest.mark.parametrize("with_penalty", [False, True])
def test_every_approximate_similarity_is_within_its_bound(bfloat16, with_penalty):
    rng = np.random.default_rng(11)
    classes = unit(rng.standard_normal((2000, 256)) + 3.0)  # all alike: similarities near 1
    images = unit(rng.standard_normal((300, 256)) + 3.0)
    penalty = rng.uniform(0, 0.5, len(classes)) if with_penalty else None
    m = R.ClassMatrix.build(classes, penalty, bfloat16)
    approx = (R.approximate_bf16 if bfloat16 else R.approximate_f32)(images, m)
    exact = images.astype(np.float64) @ classes.astype(np.float64).T
    if with_penalty:
        exact = 2 * exact - m.penalty64
    error = np.abs(approx.as_float().astype(np.float64) - exact)
    assert (error <= approx.bound[:, None]).all()
    assert error.max() > approx.bound.min() / 50  # and the bound is not absurdly loose


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(
        ValueError, match="precision must be one of auto, bfloat16, float32 but is 'fp8'"
    ):
        identification_ranks(
            np.zeros((1, 4), np.float32),
            np.eye(4, dtype=np.float32),
            np.array([0]),
            precision="fp8",
        )
