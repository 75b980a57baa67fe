"""open_rgb: Pillow's RGB pixels, bit for bit, with still WebP decoded by libwebp directly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluator.embedding import decode
from evaluator.embedding.decode import open_rgb, still_webp_size


def pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def write_webp(path: Path, image: Image.Image, **options) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", **options)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def noise_rgba() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8))


def test_real_sd_images_decode_to_pillows_pixels_on_the_fast_path(shared_data):
    paths = sorted((shared_data / "images" / "generated-sd15").glob("*.webp"))[::10]
    assert len(paths) >= 10
    for path in paths:
        fast = decode._fast_webp(path)
        assert fast is not None, f"{path.name} did not take the fast path"
        assert fast.mode == "RGB"
        assert np.array_equal(np.asarray(fast), pillow_rgb(path)), path.name
        assert np.array_equal(np.asarray(open_rgb(path)), pillow_rgb(path)), path.name


@pytest.mark.parametrize(
    ("mode", "options", "chunk"),
    [
        ("RGBA", {"lossless": True}, b"VP8L"),
        ("RGB", {"lossless": True}, b"VP8L"),
        ("RGBA", {"quality": 80}, b"VP8X"),  # lossy with alpha: the extended header
        ("RGB", {"quality": 80}, b"VP8 "),
        ("RGB", {"quality": 80, "exif": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00"}, b"VP8X"),
    ],
)
def test_every_still_layout_matches_pillow(tmp_path, noise_rgba, mode, options, chunk):
    path = write_webp(tmp_path / "x.webp", noise_rgba.convert(mode), **options)
    data = path.read_bytes()
    assert data[12:16] == chunk
    assert still_webp_size(data) == (53, 37)
    fast = decode._fast_webp(path)
    assert fast is not None
    assert np.array_equal(np.asarray(fast), pillow_rgb(path))  # alpha dropped as convert("RGB") does


def test_an_animation_goes_to_pillow_and_gives_its_first_frame(tmp_path):
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    assert still_webp_size(path.read_bytes()) is None
    assert decode._fast_webp(path) is None
    assert np.array_equal(np.asarray(open_rgb(path)), np.asarray(frames[0]))


def test_a_truncated_webp_raises_instead_of_returning_pixels(tmp_path, noise_rgba):
    whole = write_webp(tmp_path / "whole.webp", noise_rgba.convert("RGB"), quality=80).read_bytes()
    cut = tmp_path / "cut.webp"
    cut.write_bytes(whole[: len(whole) // 2])
    assert decode._fast_webp(cut) is None
    with pytest.raises(OSError):  # Pillow's own error, as without the fast path
        open_rgb(cut)


def test_pillows_decompression_bomb_limit_still_holds(tmp_path, noise_rgba, monkeypatch):
    path = write_webp(tmp_path / "x.webp", noise_rgba.convert("RGB"), lossless=True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 53 x 37 is over twice this
    assert decode._fast_webp(path) is None
    with pytest.raises(Image.DecompressionBombError):
        open_rgb(path)


def test_other_formats_are_pillows(tmp_path, noise_rgba):
    png = tmp_path / "x.png"
    noise_rgba.save(png)
    assert np.array_equal(np.asarray(open_rgb(png)), pillow_rgb(png))
    assert still_webp_size(png.read_bytes()) is None
