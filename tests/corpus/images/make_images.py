"""Regenerate the bad/odd image corpus (small files, committed). Run: python make_images.py

Each file exercises one path of evaluator.ingest.importer: empty, text named .png, truncated,
a PNG whose header claims 40000x40000 px (decompression bomb), random bytes named .jpg,
CMYK, 16-bit grey, palette with transparency, grey, RGBA, animated GIF, EXIF-rotated
JPEG, an A1111 PNG with `parameters`, and a ComfyUI PNG with a `prompt` graph.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = Path(__file__).resolve().parent


def noise(size=(16, 16), seed=0, channels=3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def main() -> None:
    (HERE / "empty.png").write_bytes(b"")
    (HERE / "text-as.png").write_text("this is a text file, not a PNG\n")
    buffer = io.BytesIO()
    Image.fromarray(noise((32, 32))).save(buffer, format="PNG")
    (HERE / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    (HERE / "bomb.png").write_bytes(bomb)
    (HERE / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)))
    Image.fromarray(noise(seed=2, channels=4), mode="CMYK").save(HERE / "cmyk.jpg", quality=90)
    gray16 = (np.linspace(0, 65535, 16 * 16).reshape(16, 16)).astype(np.uint16)
    Image.fromarray(gray16).save(HERE / "gray16.png")
    palette = Image.fromarray(noise(seed=3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(HERE / "palette.png", transparency=0)
    Image.fromarray(noise(seed=4)).convert("L").save(HERE / "gray.png")
    Image.fromarray(noise(seed=5, channels=4), mode="RGBA").save(HERE / "rgba.png")
    frames = [Image.fromarray(noise(seed=10 + i)) for i in range(3)]
    frames[0].save(HERE / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rotated = Image.fromarray(noise((16, 8), seed=6))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 CW when displayed: 16x8 stored, 8x16 shown
    rotated.save(HERE / "rotated.jpg", exif=exif, quality=90)
    info = PngInfo()
    info.add_text("parameters", (
        "portrait of a woman, in the style of Claude Monet,\nsoft light\n"
        "Negative prompt: blurry, lowres\n"
        'Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 16x16, '
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "wc: a1b2, x: c3d4", Version: v1.6.0'
    ))
    Image.fromarray(noise(seed=7)).save(HERE / "a1111.png", pnginfo=info)
    graph = {
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
              "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a harbour, style of Hokusai", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    }
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    Image.fromarray(noise(seed=8)).save(HERE / "comfyui.png", pnginfo=info)
    (HERE / "notes.txt").write_text("not an image: the importer lists it as ignored\n")


if __name__ == "__main__":
    main()
