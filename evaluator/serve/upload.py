"""An uploaded query image (POST /search, multipart): decoded within limits, or a 4xx naming the field.

Reads the uploaded bytes only (in memory); writes nothing. The limits are those import
applies to a file, checked the same way but without touching Pillow's process-wide
``MAX_IMAGE_PIXELS`` (requests run in parallel threads): the byte size first, then the
pixel count from the header, before any pixel is decoded, so a decompression bomb
costs a header read. Refusals: 413 for too large (bytes or pixels), 415 for what is not
an image, 400 for a corrupt or truncated one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from evaluator.serve.errors import ApiError

FIELD = "image"


@dataclass(frozen=True)
class UploadLimits:
    # 20 MB holds any photo or scan a person would query with (a 24-Mpx JPEG is ~10 MB).
    max_bytes: int = 20 << 20
    # 40 Mpx (e.g. 8,000 x 5,000): decoded as RGB that is 120 MB per request in flight;
    # the model sees a 224-px view of it anyway. Import's limit is 100 Mpx for stored files.
    max_pixels: int = 40_000_000


def decode_upload(data: bytes, limits: UploadLimits, filename: str = ""):
    """The uploaded image as RGB (alpha composited on white), or an ``ApiError`` naming ``image``."""
    from PIL import Image, UnidentifiedImageError

    name = f" ({filename})" if filename else ""
    if not data:
        raise ApiError(f"the uploaded {FIELD}{name} is empty (0 bytes)", field=FIELD)
    if len(data) > limits.max_bytes:
        raise ApiError(f"the uploaded {FIELD}{name} is {len(data)} bytes; the limit is {limits.max_bytes}",
                       field=FIELD, status=413)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ApiError(f"the uploaded {FIELD}{name} was refused as a decompression bomb ({exc})",
                       field=FIELD, status=413) from exc
    except UnidentifiedImageError as exc:
        raise ApiError(f"the uploaded {FIELD}{name} is not an image Pillow can read (it starts with {data[:8]!r})",
                       field=FIELD, status=415) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(f"the uploaded {FIELD}{name} is corrupt: {exc}", field=FIELD) from exc
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ApiError(f"the uploaded {FIELD}{name} is {width} x {height} = {width * height:,} pixels; "
                       f"the limit is {limits.max_pixels:,} (a decompression bomb is refused before decoding)",
                       field=FIELD, status=413)
    try:
        image.load()  # the first frame of an animation
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(f"the uploaded {FIELD}{name} is corrupt or truncated: {exc}", field=FIELD) from exc
    return _rgb(image)


def _rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
