"""Regenerate the hostile import corpus of issue 12 (small files, committed).

Run: python make_hostile.py. Each file is one case a careless or hostile source folder
holds; ``expected.toml`` says what `atelier import` must do with it, and
tests/hardening/test_hardening_corpus.py imports the folder and checks every file.
Symbolic links and huge files are made at test time instead (test_hardening_links.py):
a committed link to /etc/passwd or a 600 MiB file do not belong in a repository.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = Path(__file__).resolve().parent
PARAMS = "a painting by Claude Monet\nSteps: {steps}, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 8x8, Model: sd15"


def png(name: str, seed: int, text: dict[str, str] | None = None, itxt: dict[str, str] | None = None) -> Path:
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    for key, value in (itxt or {}).items():
        info.add_itxt(key, value)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = HERE / name
    Image.fromarray(pixels).save(path, pnginfo=info)
    return path


def raw_itxt(path: Path, key: bytes, raw: bytes) -> None:
    """Insert an iTXt chunk holding raw (not UTF-8) bytes after IHDR."""
    body = key + b"\0\0\0\0\0" + raw
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    data = path.read_bytes()
    path.write_bytes(data[:33] + chunk + data[33:])


def comfy(seed: int) -> str:
    return json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 20, "cfg": 7.0, "positive": ["6", 0]}},
                       "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a painting by Claude Monet"}}})


def main() -> None:
    png("seed-2p63.png", 1, {"parameters": PARAMS.format(steps=20, seed=2**63)})
    png("comfyui-seed-max.png", 2, {"prompt": comfy(2**64 - 1)})
    png("seed-2p64.png", 3, {"parameters": PARAMS.format(steps=20, seed=2**64)})
    png("steps-huge.png", 4, {"parameters": PARAMS.format(steps=99999999999, seed=1)})
    png("nul-text.png", 5, {"parameters": "a c\x00at\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5"})
    png("artist-dotdot.png", 6, itxt={"atelier": json.dumps({"artist_id": "../../../escaped", "checkpoint": "ck"})})
    png("artist-absolute.png", 7, itxt={"atelier": json.dumps({"artist_id": "/etc/cron.d/x", "checkpoint": "ck"})})
    png("checkpoint-dotdot.png", 8, itxt={"atelier": json.dumps({"artist_id": "claude-monet", "checkpoint": ".."})})
    raw_itxt(png("itxt-latin1.png", 9), b"parameters",
             b"a caf\xe9 painting by Claude Monet\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 8x8")
    png("markdown-prompt.png", 10, {"parameters": "![x](http://evil.example/t.png) <script>alert(1)</script> by Claude Monet"
                                                  "\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 11, Size: 8x8"})
    png("x" * 241 + ".png", 11, {"parameters": PARAMS.format(steps=20, seed=12)})
    (HERE / "secret-as.png").write_text("root:x:0:0:TOPSECRET:/root:/bin/bash\n")


if __name__ == "__main__":
    main()
