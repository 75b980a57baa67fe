"""Thumbnails for the dashboard: JPEG, longest side ``size`` px, made once at generation/import.

The dashboard shows hundreds of images per page; decoding full PNGs there would be
slow, so each image gets a small JPEG beside the store (``DIR/thumbs/...jpg``) when it
is made. Writes are atomic (a killed process leaves no half thumbnail).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from evaluator.errors import InputError

# 192 px: two columns of a dashboard grid on a laptop screen; ~8 KB each as JPEG q85.
DEFAULT_SIZE = 192
QUALITY = 85


def thumbnail_bytes(image: Any, size: int = DEFAULT_SIZE, quality: int = QUALITY) -> bytes:
    """JPEG bytes of ``image`` scaled so its longest side is at most ``size``."""
    from PIL import Image

    if size < 8:
        raise InputError(f"thumbnail size must be >= 8 but is {size}")
    thumb = image.convert("RGB") if image.mode != "RGB" else image.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def write_thumbnail(image: Any, path: str | Path, size: int = DEFAULT_SIZE) -> Path:
    """Write ``image``'s thumbnail to ``path`` atomically; return the path."""
    from catalog.atomic import atomic_write_bytes

    atomic_write_bytes(path, thumbnail_bytes(image, size))
    return Path(path)


def thumb_relpath(image_relpath: str) -> str:
    """``images/a/b.png`` -> ``thumbs/a/b.jpg`` (paths relative to the workdir)."""
    parts = Path(image_relpath).with_suffix(".jpg").parts
    return Path("thumbs", *parts[1:]).as_posix() if len(parts) > 1 else Path("thumbs", *parts).as_posix()
