"""Helpers of the training tests: a planted procedural style, and small training configs.

The planted style: vertical stripes (random phase) on a blue field (a shade per image), 32 px, in kohya's
layout (``1_stripes/img07.png`` + ``img07.txt``). Every image shares the structure, so a
LoRA that learns anything lowers the loss on held-out images of it; no image is copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_TRAINING: dict[str, Any] = dict(
    resolution=32, min_bucket_reso=32, max_bucket_reso=64, bucket_reso_steps=32,
    train_batch_size=2, max_train_steps=4, save_every=2, learning_rate=1e-2, validation_fraction=0.25,
)


def planted_style_dataset(root: Path, count: int = 12, size: int = 32, seed: int = 0, concept: str = "stripes") -> Path:
    """A kohya folder ``root/1_<concept>/`` of ``count`` striped images with captions."""
    import numpy as np
    from PIL import Image

    folder = root / f"1_{concept}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = np.zeros((size, size, 3), np.uint8)
        pixels[..., 2] = 180 + index % 60  # every image distinct (the split keys on content)
        pixels[:, int(rng.integers(0, 8))::8] = 255
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
        (folder / f"img{index:02d}.txt").write_text(f"{concept}, painting")
    return root


def toml_text(values: dict[str, Any]) -> str:
    """``key = value`` lines (TOML) of a training config."""
    import json

    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str | list):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def training_config(pipe: Path, dataset: Path, **fields: Any):
    """A validated TrainingConfig on the tiny pipeline with TINY_TRAINING's small settings."""
    from evaluator.training.config import from_mapping

    values = {"base": str(pipe), "dataset": str(dataset), "output_name": "stripes", **TINY_TRAINING, **fields}
    return from_mapping(values)
