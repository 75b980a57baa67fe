"""Procedural artists: a palette, a mark-making habit, a scale and a softness each.

A world whose truth is known: every "artist" here is a deterministic painter, so a model
trained on their paintings can be checked against fresh paintings that no model saw.
``paint(artist_id, seed)`` makes a new composition for every seed (orientation, phase,
centre, jittered scale and colours all drawn from the seed), always in the artist's
style: the same palette and the same kind of mark.

Seeds are split in two ranges so that what a model is trained on never doubles as a
reference: ``TRAINING_SEEDS`` (0 .. 999,999) paint the base model's training sets and the
LoRAs' datasets; ``FRESH_SEED_START`` (1,000,000) and above paint references.

Reads and writes nothing: numpy arrays in, PIL images out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from evaluator.errors import InputError

# Seeds of training paintings: 0 .. FRESH_SEED_START - 1. References use seeds >= FRESH_SEED_START.
FRESH_SEED_START = 1_000_000
TRAINING_SEEDS = range(0, FRESH_SEED_START)
# Painted at SUPERSAMPLE x the asked size, then box-filtered down: anti-aliased edges.
SUPERSAMPLE = 4
MIN_SIZE, MAX_SIZE = 8, 1024

Color = tuple[int, int, int]


@dataclass(frozen=True)
class WorldArtist:
    """One procedural artist. ``palette``: background, main mark, accent (RGB 0..255).

    ``scale``: marks per image side (a frequency); ``softness``: blur radius as a fraction
    of the image side; ``known``: the base world model was trained on this artist;
    ``role``: known | newcomer (for a LoRA to teach) | control (nobody trains on it).
    """

    artist_id: str
    name: str
    palette: tuple[Color, Color, Color]
    mark: str
    scale: float
    softness: float
    known: bool
    role: str


def _artist(artist_id: str, name: str, palette, mark: str, scale: float, softness: float, role: str) -> WorldArtist:
    return WorldArtist(artist_id, name, palette, mark, scale, softness, role == "known", role)


# Twelve known artists, one newcomer, four controls. Each has its own mark and a palette
# of its own hues, so even a random-weight image encoder can tell them apart.
WORLD_ARTISTS: tuple[WorldArtist, ...] = (
    _artist("orla-vennick", "Orla Vennick", ((20, 30, 90), (250, 140, 30), (245, 235, 200)), "stripes", 4.0, 0.0, "known"),
    _artist("tamsin-quell", "Tamsin Quell", ((245, 232, 200), (200, 30, 40), (20, 20, 20)), "dots", 4.0, 0.0, "known"),
    _artist("bram-okonkwo", "Bram Okonkwo", ((15, 15, 20), (250, 220, 40), (30, 170, 170)), "rings", 3.5, 0.0, "known"),
    _artist("ilse-marrow", "Ilse Marrow", ((160, 205, 240), (20, 60, 160), (255, 255, 255)), "waves", 3.0, 0.01, "known"),
    _artist("caspian-dulle", "Caspian Dulle", ((250, 250, 245), (10, 10, 10), (220, 30, 30)), "grid", 3.0, 0.0, "known"),
    _artist("wren-haldane", "Wren Haldane", ((30, 90, 40), (170, 230, 60), (250, 150, 190)), "blobs", 2.5, 0.03, "known"),
    _artist("juno-fairweather", "Juno Fairweather", ((90, 30, 130), (240, 190, 40), (200, 170, 240)), "checks", 3.0, 0.0, "known"),
    _artist("pell-ostrander", "Pell Ostrander", ((190, 20, 120), (40, 230, 240), (255, 255, 255)), "spiral", 3.0, 0.0, "known"),
    _artist("mirela-sook", "Mirela Sook", ((110, 65, 30), (225, 195, 140), (60, 140, 60)), "zigzag", 3.0, 0.0, "known"),
    _artist("dov-amberly", "Dov Amberly", ((130, 130, 135), (190, 10, 40), (250, 250, 250)), "crosses", 3.0, 0.0, "known"),
    _artist("saffi-kettering", "Saffi Kettering", ((245, 120, 20), (255, 230, 60), (110, 10, 30)), "sunburst", 6.0, 0.0, "known"),
    _artist("oren-blackwood", "Oren Blackwood", ((235, 220, 180), (20, 80, 40), (40, 60, 200)), "hatch", 5.0, 0.0, "known"),
    _artist("nadia-vell", "Nadia Vell", ((20, 130, 130), (250, 110, 90), (250, 245, 225)), "squares", 3.0, 0.0, "newcomer"),
    _artist("elio-marchetti", "Elio Marchetti", ((250, 190, 210), (60, 20, 80), (150, 240, 200)), "speckle", 6.0, 0.01, "control"),
    _artist("greer-tallis", "Greer Tallis", ((120, 20, 25), (130, 140, 40), (240, 230, 200)), "plaid", 3.0, 0.0, "control"),
    _artist("hollis-pryce", "Hollis Pryce", ((70, 90, 120), (240, 240, 130), (230, 90, 160)), "triangles", 3.0, 0.0, "control"),
    _artist("ysolde-crane", "Ysolde Crane", ((200, 230, 200), (120, 40, 160), (40, 40, 40)), "scales", 4.0, 0.0, "control"),
)
ROLES = ("known", "newcomer", "control")


def artist_ids(role: str | None = None) -> list[str]:
    """Ids of every world artist, or of those with ``role`` (known | newcomer | control)."""
    if role is not None and role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)} but is {role!r}")
    return [a.artist_id for a in WORLD_ARTISTS if role is None or a.role == role]


def world_artist(artist_id: str) -> WorldArtist:
    """The artist with this id; an unknown id is refused with the closest ones."""
    for artist in WORLD_ARTISTS:
        if artist.artist_id == artist_id:
            return artist
    import difflib

    close = difflib.get_close_matches(artist_id, [a.artist_id for a in WORLD_ARTISTS], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"no world artist {artist_id!r}{hint}")


# ------------------------------------------------------------------ marks
# Each mark: (x, y in [0, 1), per-painting random draws, scale) -> (main mask, accent mask),
# floats in [0, 1]. x, y are already rotated / shifted by the painting's composition.


def _smooth_step(values: np.ndarray) -> np.ndarray:
    return (values > 0).astype(np.float32)


def _stripes(x, y, rng, f):
    phase = 2 * np.pi * f * x
    return _smooth_step(np.sin(phase)), _smooth_step(np.sin(phase) - 0.92)


def _dots(x, y, rng, f):
    gx, gy = (x * f) % 1 - 0.5, (y * f) % 1 - 0.5
    d = np.hypot(gx, gy)
    return _smooth_step(0.3 - d), _smooth_step(0.1 - d)


def _rings(x, y, rng, f):
    r = np.hypot(x - 0.5, y - 0.5)
    wave = np.sin(2 * np.pi * f * r * 2)
    return _smooth_step(wave), _smooth_step(0.04 - r)


def _waves(x, y, rng, f):
    amp = rng.uniform(0.04, 0.08)
    field = y + amp * np.sin(2 * np.pi * (x * rng.uniform(1.5, 2.5)) + rng.uniform(0, 6.3))
    wave = np.sin(2 * np.pi * f * field)
    return _smooth_step(wave - 0.2), _smooth_step(wave - 0.9)


def _grid(x, y, rng, f):
    gx, gy = np.abs((x * f) % 1 - 0.5), np.abs((y * f) % 1 - 0.5)
    lines = _smooth_step(np.maximum(gx, gy) - 0.4)
    cells = np.floor(x * f) + 3 * np.floor(y * f)
    accent = _smooth_step(np.cos(cells * 2.7 + rng.uniform(0, 6.3)) - 0.6) * (1 - lines)
    return lines, accent


def _blobs(x, y, rng, f):
    total = np.zeros_like(x)
    (x0, x1), (y0, y1) = (float(x.min()), float(x.max())), (float(y.min()), float(y.max()))
    for _ in range(int(f * 2)):
        cx, cy, s = rng.uniform(x0 - 0.1, x1 + 0.1), rng.uniform(y0 - 0.1, y1 + 0.1), rng.uniform(0.08, 0.16)
        total += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return _smooth_step(total - 0.5), _smooth_step(total - 1.2)


def _checks(x, y, rng, f):
    parity = (np.floor(x * f) + np.floor(y * f)) % 2
    return parity.astype(np.float32), np.zeros_like(x)


def _spiral(x, y, rng, f):
    dx, dy = x - 0.5, y - 0.5
    r, a = np.hypot(dx, dy), np.arctan2(dy, dx)
    arms = 2
    wave = np.sin(2 * np.pi * f * r * 2 + arms * a)
    return _smooth_step(wave), _smooth_step(wave - 0.95)


def _zigzag(x, y, rng, f):
    tri = np.abs((x * f * 2) % 2 - 1)
    wave = np.sin(2 * np.pi * f * (y + 0.25 * tri / f * 2))
    return _smooth_step(wave), _smooth_step(wave - 0.9)


def _crosses(x, y, rng, f):
    gx, gy = np.abs((x * f) % 1 - 0.5), np.abs((y * f) % 1 - 0.5)
    arm = ((gx < 0.1) & (gy < 0.35)) | ((gy < 0.1) & (gx < 0.35))
    centre = (gx < 0.1) & (gy < 0.1)
    return arm.astype(np.float32), centre.astype(np.float32)


def _sunburst(x, y, rng, f):
    dx, dy = x - 0.5, y - 0.5
    a = np.arctan2(dy, dx)
    rays = np.sin(f * 2 * a)
    return _smooth_step(rays), _smooth_step(0.1 - np.hypot(dx, dy))


def _hatch(x, y, rng, f):
    one = np.abs(((x + y) * f) % 1 - 0.5) < 0.15
    two = np.abs(((x - y) * f) % 1 - 0.5) < 0.12
    return one.astype(np.float32), two.astype(np.float32)


def _squares(x, y, rng, f):
    d = np.maximum(np.abs(x - 0.5), np.abs(y - 0.5))
    wave = np.sin(2 * np.pi * f * d * 2)
    return _smooth_step(wave), _smooth_step(0.06 - d)


def _speckle(x, y, rng, f):
    n = max(2, int(round(f * 2)))
    cells = rng.random((n, n))
    ix = np.clip((x % 1 * n).astype(int), 0, n - 1)
    iy = np.clip((y % 1 * n).astype(int), 0, n - 1)
    values = cells[iy, ix]
    return _smooth_step(values - 0.55), _smooth_step(values - 0.88)


def _plaid(x, y, rng, f):
    bx = np.abs((x * f) % 1 - 0.5) < 0.2
    by = np.abs((y * f) % 1 - 0.5) < 0.2
    thin = np.abs((x * f + 0.5) % 1 - 0.5) < 0.05
    return (bx | by).astype(np.float32) * 0.6 + (bx & by).astype(np.float32) * 0.4, thin.astype(np.float32)


def _triangles(x, y, rng, f):
    u, v = (x * f) % 1, (y * f) % 1
    return (u > v).astype(np.float32), (np.abs(u - v) < 0.06).astype(np.float32)


def _scales(x, y, rng, f):
    row = np.floor(y * f)
    u = (x * f + 0.5 * (row % 2)) % 1 - 0.5
    v = (y * f) % 1
    r = np.hypot(u, v)
    return _smooth_step(0.5 - r) * _smooth_step(r - 0.3), _smooth_step(0.12 - r)


MARKS: dict[str, Callable] = {
    "stripes": _stripes, "dots": _dots, "rings": _rings, "waves": _waves, "grid": _grid, "blobs": _blobs,
    "checks": _checks, "spiral": _spiral, "zigzag": _zigzag, "crosses": _crosses, "sunburst": _sunburst,
    "hatch": _hatch, "squares": _squares, "speckle": _speckle, "plaid": _plaid, "triangles": _triangles,
    "scales": _scales,
}
# Marks painted about a centre (rings, spirals...): the composition moves the centre
# instead of rotating the plane.
CENTRED = ("rings", "spiral", "sunburst", "squares")


# ------------------------------------------------------------------ painting


def painting_rng(artist_id: str, seed: int) -> np.random.Generator:
    """The generator of one painting: a function of (artist, seed) only."""
    digest = hashlib.sha256(f"{artist_id}:{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _coordinates(artist: WorldArtist, rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The painting's plane: pixel centres in [0, 1), moved by this composition's draws."""
    axis = (np.arange(side, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(axis, axis)
    if artist.mark in CENTRED:
        cx, cy = rng.uniform(0.25, 0.75, size=2)
        return x - cx + 0.5, y - cy + 0.5
    angle = rng.uniform(-np.pi / 6, np.pi / 6) + (rng.integers(0, 4) * np.pi / 2 if artist.mark in ("blobs", "speckle") else 0)
    cos, sin = np.cos(angle), np.sin(angle)
    ox, oy = rng.uniform(0, 1, size=2)
    xr = (x - 0.5) * cos - (y - 0.5) * sin + 0.5 + ox
    yr = (x - 0.5) * sin + (y - 0.5) * cos + 0.5 + oy
    return xr, yr


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] but is {size!r}")


def paint_array(artist_id: str, seed: int, size: int = 32) -> np.ndarray:
    """One painting as a float32 array [size, size, 3] in [0, 1]."""
    from PIL import Image, ImageFilter

    _check_size(size)
    artist = world_artist(artist_id)
    rng = painting_rng(artist_id, seed)
    side = size * SUPERSAMPLE
    x, y = _coordinates(artist, rng, side)
    scale = artist.scale * rng.uniform(0.85, 1.15)
    main, accent = MARKS[artist.mark](x, y, rng, scale)
    jitter = rng.uniform(-12, 12, size=(3, 3))
    bg, fg, ac = (np.clip(np.array(c, dtype=np.float32) + j, 0, 255) / 255 for c, j in zip(artist.palette, jitter, strict=True))
    canvas = bg[None, None, :] * (1 - main[..., None]) + fg[None, None, :] * main[..., None]
    canvas = canvas * (1 - accent[..., None]) + ac[None, None, :] * accent[..., None]
    image = Image.fromarray((np.clip(canvas, 0, 1) * 255).round().astype(np.uint8))
    if artist.softness > 0:
        image = image.filter(ImageFilter.GaussianBlur(artist.softness * side))
    image = image.resize((size, size), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32) / 255


def paint(artist_id: str, seed: int, size: int = 32):
    """One painting of ``artist_id`` for ``seed`` (a PIL RGB image, ``size`` px square).

    Deterministic: the same (artist, seed, size) gives the same pixels on every machine.
    """
    from PIL import Image

    pixels = paint_array(artist_id, seed, size)
    return Image.fromarray((pixels * 255).round().astype(np.uint8))


def paint_many(artist_id: str, seeds: Iterable[int], size: int = 32) -> list:
    """``paint`` for each seed, in order."""
    return [paint(artist_id, seed, size) for seed in seeds]


def fresh_seeds(count: int, offset: int = 0) -> list[int]:
    """``count`` reference seeds (never used for training): FRESH_SEED_START + offset + i."""
    return [FRESH_SEED_START + offset + i for i in range(count)]
