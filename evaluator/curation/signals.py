"""The per-file worker: one file's bytes -> its pixel signals (no model needed).

Shared by every distributor (the process pool of a run, the naive loop of the benchmark):
read the bytes, hash them, and unless the content is already curated decode the image as
``atelier import`` does (same reader, same refusal reasons), measure its size, hash its
pixels (``imagehash.phash`` of the whole image and of its centre 90%, so a light crop
still lands near its original) and read SD's invisible watermark. With a visible-watermark
detector, it also returns the detector's 256x256 input, so the main process never decodes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The centre crop of the second hash: 5% off each side.
CENTRE_MARGIN = 0.05
DETECTOR_SIDE = 256  # LAION's watermark detector input: 256x256, squashed


@dataclass
class FileSignals:
    """What one file gave. ``skipped``: its content was curated before (only the hash is read)."""

    path: str  # the key of the file in its source (relative path)
    sha256: str
    file_bytes: int
    skipped: bool = False
    error: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None  # 16 hex digits
    phash_centre: str | None = None
    sd_mark: str | None = None
    sd_mark_agreement: float | None = None
    sd_mark_reason: str | None = None
    caption: str | None = None  # the prompt of the PNG parameters, when present
    detector_input: Any = None  # uint8 [256, 256, 3] when asked for
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerOptions:
    done: frozenset[str] = frozenset()  # content already curated: hash only
    detector_input: bool = False
    sd_mark: bool = True


def centre_crop(image):
    width, height = image.size
    dx, dy = round(width * CENTRE_MARGIN), round(height * CENTRE_MARGIN)
    return image.crop((dx, dy, width - dx, height - dy))


def pixel_hashes(image) -> tuple[str, str]:
    """(phash of the image, phash of its centre 90%) as 16 hex digits each."""
    import imagehash

    return str(imagehash.phash(image)), str(imagehash.phash(centre_crop(image)))


def file_signals(path: Path, key: str, options: WorkerOptions) -> FileSignals:
    """The pixel signals of one file; an undecodable one gets its reason in ``error``."""
    try:
        data = path.read_bytes()
    except OSError as exc:  # recorded under a hash of its name: it has no readable content
        sha = hashlib.sha256(b"unreadable-file:" + key.encode("utf-8")).hexdigest()
        return FileSignals(key, sha, 0, error=f"cannot read the file ({exc.strerror or exc})")
    sha = hashlib.sha256(data).hexdigest()
    result = FileSignals(key, sha, len(data))
    if sha in options.done:
        result.skipped = True
        return result
    from evaluator.ingest.importer import _decode

    try:
        image, info, notes = _decode(path, data)
    except ValueError as exc:
        result.error = str(exc)
        return result
    result.notes = list(notes)
    result.width, result.height = image.size
    result.caption = (info or {}).get("prompt") or None
    result.phash, result.phash_centre = pixel_hashes(image)
    if options.sd_mark:
        _read_mark(image, result)
    if options.detector_input:
        import numpy as np
        from PIL import Image

        result.detector_input = np.asarray(image.resize((DETECTOR_SIDE, DETECTOR_SIDE), Image.BILINEAR))
    return result


def _read_mark(image, result: FileSignals) -> None:
    import numpy as np

    from evaluator.curation.sdmark import read_sd_mark

    reading = read_sd_mark(np.asarray(image))
    result.sd_mark, result.sd_mark_agreement, result.sd_mark_reason = (
        reading.message, reading.agreement, reading.reason)


# ---------------------------------------------------------------- the process pool's side

_OPTIONS: WorkerOptions | None = None


def init_worker(options: WorkerOptions) -> None:
    """Pool initializer: the options (and the done set) are sent once per worker, not per file."""
    global _OPTIONS
    _OPTIONS = options
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV's own threads would oversubscribe


def pool_task(job: tuple[str, str]) -> FileSignals:
    """One (absolute path, key) under the initializer's options."""
    assert _OPTIONS is not None, "init_worker was not called"
    return file_signals(Path(job[0]), job[1], _OPTIONS)
