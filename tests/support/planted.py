"""A planted-style world: procedural "artists" whose works share a palette and a stroke
(stripes of one angle and frequency), each work a new phase and grain.

Any image encoder that sees colour and orientation, a random-weight one included,
tells these artists apart: identification metrics on them must be near perfect, and at
chance once the labels are shuffled. Seeded: the same arguments give the same pixels.
"""

from __future__ import annotations

import colorsys
import zlib

import numpy as np
from PIL import Image


def planted_name(artist: int) -> str:
    return f"Planted Painter {chr(ord('A') + artist)}"


def planted_id(artist: int) -> str:
    return f"planted-painter-{chr(ord('a') + artist)}"


def planted_work(artist: int, n_artists: int, work: str, size: int = 64) -> Image.Image:
    """One work of ``artist``: its palette and stroke, a phase and grain drawn from ``work``."""
    rng = np.random.default_rng(zlib.crc32(f"{artist}/{work}".encode()))
    hue = artist / n_artists
    angle = np.pi * ((artist * 0.37) % 1.0)
    freq = 2 + (artist % 4) * 2
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    light = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    dark = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.3))
    pixels = wave[..., None] * light + (1 - wave[..., None]) * dark + rng.normal(0, 0.05, (size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
