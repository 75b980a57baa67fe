"""Aspect-ratio bucketing (kohya sd-scripts' rule), deterministic batches, and pixels.

Reads image files (``load_pixels``); writes nothing. Images are not cropped blindly to a
square: each goes to the bucket (a width x height of about ``resolution**2`` pixels,
both sides multiples of ``step`` within [``min_side``, ``max_side``]) whose aspect ratio
is closest to its own, is resized to cover the bucket and center-cropped. Every batch
holds images of one bucket, so a batch is one tensor.

The buckets, as kohya's ``make_bucket_resolutions``: the square ``resolution`` bucket,
then for each width from ``min_side`` to ``max_side`` in ``step`` increments the largest
height (a multiple of ``step``, at most ``max_side``) whose area stays within
``resolution**2``, and its transpose.

Batches are a pure function of (the set of items, seed, epoch): within each bucket the epoch's
entries (each item ``repeats`` times) are shuffled, cut into batches of ``batch_size``
(a bucket's last batch may be smaller, as kohya keeps it), and the batches of all
buckets are shuffled together. ``batch(index)`` gives any batch of any epoch without
iterating, so a resumed run picks up exactly where it stopped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evaluator.errors import InputError

if TYPE_CHECKING:
    import torch

    from evaluator.training.dataset import TrainingItem

Size = tuple[int, int]  # (width, height)
Batch = list[tuple["TrainingItem", Size]]


def make_buckets(resolution: int, min_side: int = 256, max_side: int = 1024, step: int = 64) -> list[Size]:
    """The bucket sizes (width, height) for ``resolution``, sorted by aspect ratio."""
    _check_sides(resolution, min_side, max_side, step)
    area_units = (resolution // step) ** 2  # the area in step x step tiles
    square = int(math.sqrt(area_units)) * step
    sizes = {(square, square)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (area_units // (width // step)) * step)
        if height >= min_side:
            sizes.add((width, height))
            sizes.add((height, width))
    return sorted(sizes, key=lambda s: (s[0] / s[1], s[0]))


def _check_sides(resolution: int, min_side: int, max_side: int, step: int) -> None:
    for name, value in (("resolution", resolution), ("min_side", min_side), ("max_side", max_side), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"bucket {name} must be a positive integer but is {value!r}")
    if step % 8:
        raise InputError(f"bucket step must be a multiple of 8 (the VAE's downsampling) but is {step}")
    for name, value in (("min_side", min_side), ("max_side", max_side), ("resolution", resolution)):
        if value % step:
            raise InputError(f"bucket {name} must be a multiple of step {step} but is {value}")
    if not min_side <= resolution <= max_side:
        raise InputError(f"resolution {resolution} must lie within [min_side {min_side}, max_side {max_side}]")


def nearest_bucket(width: int, height: int, buckets: list[Size]) -> Size:
    """The bucket whose aspect ratio is closest to width/height (ties: the first, i.e. narrower)."""
    ratio = width / height
    return min(buckets, key=lambda s: abs(s[0] / s[1] - ratio))


@dataclass
class _Bucket:
    size: Size
    entries: list[int]  # indexes into the items, each repeated `repeats` times


class BucketBatches:
    """Deterministic batches of (item, bucket size), every batch within one bucket."""

    def __init__(
        self,
        items: list[TrainingItem],
        resolution: int,
        batch_size: int,
        seed: int,
        min_side: int = 256,
        max_side: int = 1024,
        step: int = 64,
    ) -> None:
        if not items:
            raise InputError("no training images to batch (the split left the training side empty)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"train_batch_size must be an integer >= 1 but is {batch_size!r}")
        # sorted by content, so the batches do not depend on the order the items came in
        self.items = sorted(items, key=lambda i: (i.sha256, i.relpath, str(i.path)))
        self.batch_size = batch_size
        self.seed = int(seed)
        self.sizes = make_buckets(resolution, min_side, max_side, step)
        self.assigned: list[Size] = [nearest_bucket(i.width, i.height, self.sizes) for i in self.items]
        by_size: dict[Size, list[int]] = {}
        for index, (item, size) in enumerate(zip(self.items, self.assigned, strict=True)):
            by_size.setdefault(size, []).extend([index] * item.repeats)
        self.buckets = [_Bucket(size, entries) for size, entries in sorted(by_size.items())]
        self._epochs: dict[int, list[Batch]] = {}

    @property
    def batches_per_epoch(self) -> int:
        return sum(math.ceil(len(b.entries) / self.batch_size) for b in self.buckets)

    @property
    def images_per_epoch(self) -> int:
        return sum(len(b.entries) for b in self.buckets)

    def bucket_counts(self) -> dict[Size, int]:
        """Images (with repeats) per bucket size: what a user checks their data against."""
        return {b.size: len(b.entries) for b in self.buckets}

    def epoch(self, number: int) -> list[Batch]:
        """Every batch of epoch ``number`` (0-based), in training order."""
        if number not in self._epochs:
            rng = random.Random(f"{self.seed}:{number}")
            batches: list[Batch] = []
            for bucket in self.buckets:
                order = list(bucket.entries)
                rng.shuffle(order)
                for start in range(0, len(order), self.batch_size):
                    batches.append([(self.items[i], bucket.size) for i in order[start : start + self.batch_size]])
            rng.shuffle(batches)
            self._epochs = {number: batches}  # keep one epoch: long runs must not grow memory
        return self._epochs[number]

    def batch(self, index: int) -> Batch:
        """The ``index``-th batch of the run (epoch after epoch)."""
        if index < 0:
            raise IndexError(f"batch index must be >= 0 but is {index}")
        epoch, within = divmod(index, self.batches_per_epoch)
        return self.epoch(epoch)[within]

    def __iter__(self):
        """Batches forever, epoch after epoch (the loop stops at max_train_steps)."""
        index = 0
        while True:
            yield self.batch(index)
            index += 1


def load_pixels(item: TrainingItem, size: Size) -> torch.Tensor:
    """The item's image as a float tensor [3, height, width] in [-1, 1]: EXIF-rotated, RGB,
    resized (Lanczos) to cover ``size`` and center-cropped to it."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    width, height = size
    try:
        with Image.open(item.path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:
        raise InputError(f"{item.path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    scale = max(width / image.width, height / image.height)
    cover = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(cover, Image.Resampling.LANCZOS)
    left, top = (cover[0] - width) // 2, (cover[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
