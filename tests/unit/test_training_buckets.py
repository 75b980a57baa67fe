"""Aspect-ratio buckets against kohya's rule, deterministic batches, pixels in [-1, 1]."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from evaluator.errors import InputError
from evaluator.training.buckets import BucketBatches, load_pixels, make_buckets, nearest_bucket
from evaluator.training.dataset import load_dataset


def naive_buckets(resolution: int, lo: int, hi: int, step: int) -> set[tuple[int, int]]:
    """Every (w, h) on the step grid within [lo, hi] of area <= resolution**2 that is maximal:
    no taller bucket of the same width fits (plus the square)."""
    out = {(resolution, resolution)}
    for w in range(lo, hi + 1, step):
        fits = [h for h in range(lo, hi + 1, step) if w * h <= resolution * resolution]
        if fits:
            out.add((w, max(fits)))
            out.add((max(fits), w))
    return out


@pytest.mark.parametrize("resolution, lo, hi, step", [(512, 256, 1024, 64), (768, 256, 1024, 64), (64, 32, 128, 8)])
def test_buckets_match_the_naive_rule(resolution, lo, hi, step):
    buckets = make_buckets(resolution, lo, hi, step)
    assert set(buckets) == naive_buckets(resolution, lo, hi, step)
    assert all(w % step == 0 and h % step == 0 and lo <= min(w, h) and max(w, h) <= hi for w, h in buckets)
    assert all(w * h <= resolution**2 for w, h in buckets)


def test_kohya_512_buckets_include_the_usual_sizes():
    buckets = set(make_buckets(512))
    assert {(512, 512), (448, 576), (576, 448), (384, 640), (320, 768), (256, 1024)} <= buckets


@pytest.mark.parametrize("kwargs, message", [
    ({"resolution": 500}, "multiple of step 64"),
    ({"resolution": 512, "step": 12}, "multiple of 8"),
    ({"resolution": 128}, "within"),
    ({"resolution": 0}, "positive integer"),
])
def test_bad_bucket_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_buckets(**kwargs)


def test_nearest_bucket_by_aspect_ratio():
    buckets = make_buckets(512)
    assert nearest_bucket(1000, 1000, buckets) == (512, 512)
    assert nearest_bucket(1920, 1080, buckets) == min(buckets, key=lambda s: abs(s[0] / s[1] - 1920 / 1080))
    assert nearest_bucket(100, 400, buckets) == (256, 1024)


@pytest.fixture()
def items(tmp_path, shared_data):
    root = tmp_path / "ds"
    (root / "3_art").mkdir(parents=True)
    for src in sorted((shared_data / "images" / "paintings").glob("*.jpg")):
        shutil.copy(src, root / "3_art" / src.name)
    return load_dataset(root).items


def test_batches_are_deterministic_one_bucket_each_and_cover_the_repeats(items):
    batches = BucketBatches(items, 64, 2, seed=5, min_side=32, max_side=128, step=8)
    again = BucketBatches(list(reversed(items)), 64, 2, seed=5, min_side=32, max_side=128, step=8)
    epoch = batches.epoch(0)
    assert len(epoch) == batches.batches_per_epoch
    seen = {}
    for batch in epoch:
        assert len({size for _, size in batch}) == 1 and 1 <= len(batch) <= 2
        for item, size in batch:
            assert size == nearest_bucket(item.width, item.height, batches.sizes)
            seen[item.relpath] = seen.get(item.relpath, 0) + 1
    assert seen == {i.relpath: 3 for i in items}  # every image `repeats` times per epoch
    assert batches.images_per_epoch == 3 * len(items)
    key = [[(i.relpath, s) for i, s in b] for b in epoch]
    assert key == [[(i.relpath, s) for i, s in b] for b in BucketBatches(items, 64, 2, 5, 32, 128, 8).epoch(0)]
    assert key == [[(i.relpath, s) for i, s in b] for b in again.epoch(0)]  # input order plays no part
    assert key != [[(i.relpath, s) for i, s in b] for b in batches.epoch(1)]  # reshuffled each epoch
    n = batches.batches_per_epoch
    assert [(i.relpath, s) for i, s in batches.batch(n + 1)] == [(i.relpath, s) for i, s in batches.epoch(1)[1]]
    assert math.ceil(3 * len(items) / 2) <= n


def test_load_pixels_covers_and_center_crops(items):
    tall = max(items, key=lambda i: i.height / i.width)
    pixels = load_pixels(tall, (48, 64))
    assert tuple(pixels.shape) == (3, 64, 48)
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0 and float(pixels.std()) > 0.05
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(tall.path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = max(48 / image.width, 64 / image.height)
    cover = (max(48, round(image.width * scale)), max(64, round(image.height * scale)))
    ref = image.resize(cover, Image.Resampling.LANCZOS)
    left, top = (cover[0] - 48) // 2, (cover[1] - 64) // 2
    expected = np.asarray(ref.crop((left, top, left + 48, top + 64)), dtype=np.float32) / 127.5 - 1
    assert np.allclose(pixels.permute(1, 2, 0).numpy(), expected)


def test_empty_training_side_is_refused():
    with pytest.raises(InputError, match="no training images"):
        BucketBatches([], 512, 1, 0)


def test_grayscale_image_becomes_three_channels(tmp_path, shared_data):
    gray = [p for p in (shared_data / "images" / "paintings").iterdir() if p.suffix in (".jpg", ".png")]
    from PIL import Image

    mono = next(p for p in gray if Image.open(p).mode == "L")
    root: Path = tmp_path / "g" / "1_g"
    root.mkdir(parents=True)
    shutil.copy(mono, root / mono.name)
    item = load_dataset(tmp_path / "g").items[0]
    assert load_pixels(item, (32, 32)).shape[0] == 3
