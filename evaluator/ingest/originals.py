"""Which imported files are kept byte for byte, and how a copy on disk is checked whole.

An imported file is copied as it is (same bytes, same encoding, its own suffix) when it
is a well-formed, single-frame, 8-bit RGB PNG (IHDR bit depth 8), JPEG or WebP that needed no change at all:
no EXIF rotation to apply, no alpha to composite, no CMYK / 16-bit / palette / grey mode to
convert, no text chunk to repair, and its bytes end the way their format says a whole file
ends (``bytes_look_complete``). Every other decodable file is converted into an RGB PNG
as before (and the importer's notes say what was converted). Why keep originals: the
SD 1.5 WebP set of 14 MB grew to 197 MB as PNG, and decoding those PNGs (zlib) was most
of the embedder's input time.

The same end-of-file test tells a resumed import whether a copy left by a killed run is
whole (``copy_is_complete``): a PNG ends with IEND, a JPEG with its EOI marker, a WebP's
RIFF header gives its exact length. Copies are written atomically, so the test guards
against copies made by other tools or by older versions.
"""

from __future__ import annotations

from pathlib import Path

from evaluator.generation.pngmeta import PNG_SIGNATURE, PNG_TRAILER

# Pillow's format name -> the suffix a kept original gets (the encodings every reader
# downstream, browsers and training tools included, opens without a plugin).
KEPT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
TAIL_BYTES = 12  # the most any end-of-file test needs (PNG's IEND chunk)


def _complete(head: bytes, tail: bytes, size: int, suffix: str) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` and ending with ``tail``
    is whole for the encoding its ``suffix`` names (unknown suffixes: not whole)."""
    suffix = suffix.lower()
    if suffix == ".png":
        return size >= 57 and head.startswith(PNG_SIGNATURE) and tail.endswith(PNG_TRAILER)
    if suffix in (".jpg", ".jpeg"):
        return size >= 4 and head.startswith(JPEG_START) and tail.endswith(JPEG_END)
    if suffix == ".webp":
        if size < 20 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        riff = int.from_bytes(head[4:8], "little")
        return riff + 8 + (riff & 1) == size  # RIFF pads an odd length with one byte
    return False


def bytes_look_complete(data: bytes, suffix: str) -> bool:
    """The end-of-file test on bytes in memory (the file being imported)."""
    return _complete(data[:12], data[-TAIL_BYTES:], len(data), suffix)


def copy_is_complete(path: Path) -> bool:
    """The end-of-file test on a copy on disk (reads 24 bytes, decodes nothing)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(12)
            handle.seek(max(0, size - TAIL_BYTES))
            tail = handle.read(TAIL_BYTES)
    except OSError:
        return False
    return _complete(head, tail, size, path.suffix)


def sniff_format(data: bytes) -> str | None:
    """``PNG``, ``JPEG`` or ``WEBP`` from a file's first bytes (None: another format)."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(JPEG_START):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def keep_original(data: bytes, converted: bool, source_name: str = "") -> tuple[str | None, str | None]:
    """(the suffix under which the original bytes are kept, None to convert to PNG;
    the note saying why a file that needed no conversion is re-encoded all the same).

    ``converted``: the importer changed something (a note was written: rotation, mode,
    alpha, frames, text chunks), so the original is not what the store describes.
    """
    image_format = sniff_format(data)
    if converted:
        return None, None
    if image_format is None:
        kind = Path(source_name).suffix.lstrip(".").upper() or "this format"
        return None, f"{kind} re-encoded as PNG (kept as they are: PNG, JPEG, WebP)"
    suffix = KEPT_FORMATS[image_format]
    if not bytes_look_complete(data, suffix):
        return None, f"{image_format} does not end the way a whole file does (data past its end?): re-encoded as PNG"
    if suffix == ".png" and data[24:25] != b"\x08":  # IHDR bit depth: Pillow reads 16-bit RGB as 8-bit
        return None, "16-bit PNG re-encoded as 8-bit PNG"
    return suffix, None
