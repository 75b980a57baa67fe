"""Builders of the scoring tests: a catalog, seeded images and their manifest shards.

Everything is made here, seeded: no other stage's code is needed to test scoring.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from catalog.units import BASELINE_ARTIST_ID, WorkUnit
from evaluator.workspace.manifest import write_shard

ARTISTS = [
    ("claude-monet", "Claude Monet", "Yes"),
    ("pablo-picasso", "Pablo Picasso", "Yes"),
    ("hokusai", "Hokusai", "No"),
    ("frida-kahlo", "Frida Kahlo", "No"),
]
TEMPLATES = {"style": "a painting in the style of {name}", "portrait": "a portrait by {name}", "null": "a painting"}


def write_catalog(path: Path, artists=ARTISTS) -> Path:
    from catalog.model import Artist, write_catalog

    write_catalog([Artist(artist_id=a, name=n, recognized_sdxl=r, recognized_sd1=r) for a, n, r in artists], path)
    return path


def _image(seed: int, tint: tuple[int, int, int], size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.array(tint, dtype=np.float64)[None, None, :]
    noise = rng.normal(0, 40, size=(size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def make_workdir(
    root: Path,
    checkpoints=("base", "ft"),
    artists=ARTISTS,
    templates=("style", "portrait"),
    seeds=(0, 1, 2),
    baseline: bool = True,
    run_id: str = "gen-1",
    broken: int = 0,
) -> list[dict]:
    """Write PNGs and one manifest shard per checkpoint; return the records."""
    records = []
    now = datetime(2026, 1, 1)
    for c_i, ckpt in enumerate(checkpoints):
        rows = []
        cells = [(a, t) for a, _, _ in artists for t in templates]
        if baseline:
            cells.append((BASELINE_ARTIST_ID, "null"))
        for a_i, (artist, template) in enumerate(cells):
            name = dict((a, n) for a, n, _ in artists).get(artist, "")
            prompt = TEMPLATES[template].format(name=name)
            for seed in seeds:
                unit = WorkUnit(ckpt, artist, template, prompt, "", seed, 48, 48, 4, 5.0, "ddim")
                rel = f"images/{unit.relpath()}"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                tint = ((37 * a_i) % 256, (91 * a_i + 40 * c_i) % 256, (53 * a_i) % 256)
                _image(hash((ckpt, artist, template, seed)) % 2**32, tint).save(path)
                rows.append({**unit.to_dict(), "source": "generated", "path": rel, "thumb_path": None,
                             "sha256": None, "seconds": 0.1, "error": None, "run_id": run_id, "created_at": now})
        for i in range(broken):
            path = root / rows[i]["path"]
            path.write_bytes(b"not a png at all")
        write_shard(rows, root / "manifests" / run_id / f"{ckpt}-rank0-part0.parquet")
        records.extend(rows)
    return records
