"""The embedder's input side: workers and threads from the cores, and the shrink before the resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluator.embedding.clip import ClipPreprocess, shrink_for
from evaluator.embedding.images import loader_plan


@pytest.mark.parametrize(("device", "cores", "expected"), [
    ("cpu", 1, (1, 1, False)),  # the model keeps the core; one worker decodes beside it
    ("cpu", 2, (1, 2, False)),  # measured: 1 worker + 2 threads beat 2 + 2 on 2 cores
    ("cpu", 16, (4, 12, False)),
    ("cuda", 8, (7, 8, True)),  # the GPU computes: all cores but one decode, pinned batches
    ("cuda:1", 32, (8, 32, True)),
])
def test_loader_plan_follows_the_cores(device, cores, expected):
    plan = loader_plan(device, cores=cores)
    assert (plan.workers, plan.torch_threads, plan.pin_memory) == expected
    assert plan.prefetch_factor == 4


def test_an_explicit_worker_count_wins():
    assert loader_plan("cpu", num_workers=0, cores=2).workers == 0
    assert loader_plan("cpu", num_workers=0, cores=2).prefetch_factor is None
    assert loader_plan("cuda", num_workers=3, cores=8).workers == 3


def test_shrink_keeps_twice_the_input_side():
    assert shrink_for(Image.new("RGB", (1024, 1536)), 224).size == (512, 768)  # factor 2: 512 >= 448
    assert shrink_for(Image.new("RGB", (4000, 3000)), 224).size == (667, 500)  # factor 6
    small = Image.new("RGB", (512, 512))
    assert shrink_for(small, 224) is small  # 512 // 448 = 1: nothing to gain


def test_preprocess_shrinks_then_transforms_and_open_matches_for_lossless_files(tmp_path):
    seen = []

    def transform(image):
        seen.append(image.size)
        return np.asarray(image, dtype=np.float32)

    pre = ClipPreprocess(transform, 32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 200, 3), dtype=np.uint8))
    out = pre(image)
    assert seen == [(67, 86)] and out.shape == (86, 67, 3)  # reduced by 3 (200 // 64), rounded up
    image.save(tmp_path / "a.png")
    assert np.array_equal(pre.open(tmp_path / "a.png"), out)  # a file decodes to the same input
    image.save(tmp_path / "a.jpg", quality=95)
    seen.clear()
    pre.open(tmp_path / "a.jpg")  # JPEG: decoded at 1/2 scale in draft mode (200 // 2 >= 64), then reduced
    assert seen and min(seen[0]) >= 64
