"""Stable Diffusion's invisible watermark (the ``invisible-watermark`` package, dwtDct).

SD 1.x/2.x reference scripts embed the 17 bytes ``StableDiffusionV1`` (136 bits); SDXL
(diffusers' ``StableDiffusionXLWatermarker``) a fixed 48-bit message. We decode as many
bits as each message has and compare by bit agreement (1 - Hamming distance / length),
never by equality: a real image that went through a lossless save still flips bits, and
some pictures do not hold dwtDct at all. Images under 256x256 pixels cannot carry it
(the package refuses them): their agreement is NULL with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SD1_BYTES = b"StableDiffusionV1"
# diffusers/pipelines/stable_diffusion_xl/watermark.py: WATERMARK_MESSAGE (0xB3EC907BB19E)
SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110
MIN_PIXELS = 256 * 256  # WatermarkEncoder/Decoder refuse smaller images


def _bits_of_bytes(data: bytes) -> tuple[int, ...]:
    return tuple((byte >> (7 - i)) & 1 for byte in data for i in range(8))


def _bits_of_int(value: int) -> tuple[int, ...]:
    return tuple(int(bit) for bit in bin(value)[2:])


# name -> the message's bits, most significant first (as the package packs them)
KNOWN_MARKS: dict[str, tuple[int, ...]] = {
    "sd1": _bits_of_bytes(SD1_BYTES),
    "sdxl": _bits_of_int(SDXL_MESSAGE),
}


@dataclass(frozen=True)
class MarkReading:
    """The best-matching known message and its bit agreement (None: could not be read)."""

    message: str | None
    agreement: float | None
    reason: str | None = None


def bit_agreement(bits, expected: tuple[int, ...]) -> float:
    """Share of positions where ``bits`` equals ``expected`` (1 - normalised Hamming distance)."""
    if len(bits) != len(expected):
        raise ValueError(f"decoded {len(bits)} bits, the message has {len(expected)}")
    return sum(int(a) == b for a, b in zip(bits, expected, strict=True)) / len(expected)


def read_sd_mark(rgb: np.ndarray) -> MarkReading:
    """Decode each known message from an RGB uint8 array [H, W, 3]; keep the best agreement."""
    from imwatermark import WatermarkDecoder

    height, width = rgb.shape[:2]
    if height * width < MIN_PIXELS:
        return MarkReading(None, None, f"{width}x{height} is under 256x256 pixels: dwtDct cannot carry a mark")
    bgr = rgb[:, :, ::-1].copy()  # the package works on OpenCV's BGR order
    best: tuple[float, str] | None = None
    for name, expected in KNOWN_MARKS.items():
        bits = WatermarkDecoder("bits", len(expected)).decode(bgr, "dwtDct")
        score = bit_agreement(bits, expected)
        if best is None or score > best[0]:
            best = (score, name)
    return MarkReading(best[1], best[0])


def embed_sd_mark(rgb: np.ndarray, message: str = "sd1") -> np.ndarray:
    """``rgb`` with a known message embedded as SD's scripts do (tests and measurements)."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    if message == "sd1":
        encoder.set_watermark("bytes", SD1_BYTES)
    else:
        encoder.set_watermark("bits", list(KNOWN_MARKS[message]))
    return encoder.encode(rgb[:, :, ::-1].copy(), "dwtDct")[:, :, ::-1].copy()
