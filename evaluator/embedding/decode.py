"""Opening an image file as RGB pixels: Pillow's pixels, decoded faster where that is safe.

Pillow (10-13) decodes every WebP through libwebp's animation decoder: the frame is drawn on
an RGBA canvas, then converted. For a still 1024 px SD image that costs ~18 ms of CPU, while
libwebp's plain decoder writing RGB directly (through imagecodecs) gives the same pixels, bit
for bit, in ~7 ms (../shared's 150 SD 1.5 images, one core). Decoding is the embedder's
whole CPU cost besides the model, so this is most of what the input pipeline can still win.

The fast path takes only still WebP files whose header it understands and whose size is
inside Pillow's decompression-bomb limit; anything else (animations, other formats, a
header it cannot read, a decoder error) goes to Pillow, which decides and words the error.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

# RIFF container (RFC 9649): "RIFF", size, "WEBP", then the first chunk's fourcc at 12.
_RIFF_HEADER = 12
_VP8X_ANIMATION = 0x02  # the VP8X flags byte: this file holds an animation


def still_webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a still WebP from its header; None when ``data`` is not one."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    fourcc = data[12:16]
    if fourcc == b"VP8 ":  # lossy: a keyframe header, start code 9d 01 2a, 14-bit sides
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if fourcc == b"VP8L":  # lossless: signature 0x2f, then (side - 1) in 14 bits each
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fourcc == b"VP8X":  # extended: flags, then the canvas's (side - 1) in 24 bits each
        if data[20] & _VP8X_ANIMATION:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _fast_webp(path: str | Path) -> Any | None:
    """The RGB image of a still WebP decoded by libwebp directly, or None to let Pillow do it."""
    from PIL import Image

    data = Path(path).read_bytes()
    size = still_webp_size(data)
    if size is None or Image.MAX_IMAGE_PIXELS is not None and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        return None
    try:
        from imagecodecs import webp_decode

        pixels = webp_decode(data, hasalpha=False)  # alpha dropped, as Pillow's convert("RGB") does
    except Exception:  # imagecodecs missing or refusing the file: Pillow decides
        return None
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    return Image.fromarray(pixels)  # (h, w, 3) uint8: mode RGB


def open_rgb(path: str | Path, draft_side: int | None = None) -> Any:
    """The RGB pixels of an image file as a PIL image (alpha dropped, as ``convert("RGB")``).

    ``draft_side`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while staying at least that
    many pixels on each side (its DCT scaled while decoding): callers that shrink anyway.
    """
    from PIL import Image

    if str(path).lower().endswith(".webp"):  # a WebP named otherwise is Pillow's: same pixels, slower
        image = _fast_webp(path)
        if image is not None:
            return image
    with Image.open(path) as img:
        if draft_side and img.format == "JPEG":
            img.draft(None, (draft_side, draft_side))
        img.load()
        return img.convert("RGB")

