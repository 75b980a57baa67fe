"""Reference works: real images of an artist, the ground truth of its style.

``add_references(workdir, artist_id, folder)`` decodes every image file of a folder,
copies it into the workdir as PNG (``imported/_references/<artist>/<sha16>.png``) with a
thumbnail, and writes a manifest shard (``source = 'reference'``), so ``atelier score``
ingests them like any image. With a CLIP model it also embeds them, and writes the
``reference_images`` rows and the artist's prototype (normalised mean embedding) to the
store in one transaction.

Identity: the image id hashes (``_references``, artist, the file's SHA-256), so adding
the same folder twice adds nothing, and the same painting under two names is one image.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluator.embed import LoadedClip
    from evaluator.workdir import Workdir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
REFERENCE_CHECKPOINT = "_references"  # folder name; images.checkpoint stays NULL
THUMB_SIDE = 192


@dataclass
class ReferenceResult:
    artist_id: str
    added: list[int] = field(default_factory=list)  # image ids (new or already present)
    errors: dict[str, str] = field(default_factory=dict)  # file -> error
    shard: str | None = None
    prototype_models: list[str] = field(default_factory=list)


def reference_unit_id(artist_id: str, sha256: str) -> str:
    """The unit id of a reference image: a WorkUnit hash with the file hash as prompt."""
    from catalog.units import WorkUnit

    unit = WorkUnit(REFERENCE_CHECKPOINT, artist_id, "reference", f"sha256:{sha256}", "", -1, 0, 0, 0, 0.0, "")
    return unit.unit_id


def _check_artist(workdir: Workdir, artist_id: str, catalog_path: str | Path | None) -> None:
    """The artist must be a catalog artist (else its references would match nothing)."""
    import difflib

    ids: list[str] = []
    try:
        from catalog.model import load_catalog

        ids = [a.artist_id for a in load_catalog(catalog_path)]
    except (ImportError, FileNotFoundError, OSError):
        if workdir.store.is_file():
            from evaluator.store import open_store

            with open_store(workdir.store, read_only=True) as con:
                ids = [r[0] for r in con.execute("SELECT artist_id FROM artists").fetchall()]
    if ids and artist_id not in set(ids):
        close = difflib.get_close_matches(artist_id, ids, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"artist {artist_id!r} is not in the catalog{hint}")


def add_references(
    workdir: Workdir,
    artist_id: str,
    folder: str | Path,
    clip: LoadedClip | None = None,
    catalog_path: str | Path | None = None,
    check_catalog: bool = True,
) -> ReferenceResult:
    """Import the images of ``folder`` as references of ``artist_id``; see the module doc."""
    from PIL import Image

    from catalog.atomic import atomic_path
    from evaluator.manifest import write_shard

    src = Path(folder)
    if not src.is_dir():
        raise FileNotFoundError(f"reference folder {src} does not exist")
    if check_catalog:
        _check_artist(workdir, artist_id, catalog_path)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"reference folder {src} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    result = ReferenceResult(artist_id)
    records = []
    now = datetime.now(UTC).replace(tzinfo=None)
    for path in files:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        unit_id = reference_unit_id(artist_id, sha)
        from catalog.units import image_id_of

        image_id = image_id_of(unit_id)
        rel = f"imported/{REFERENCE_CHECKPOINT}/{artist_id}/{sha[:16]}.png"
        thumb_rel = f"thumbs/{REFERENCE_CHECKPOINT}/{artist_id}/{sha[:16]}.jpg"
        record = {
            "image_id": image_id,
            "unit_id": unit_id,
            "source": "reference",
            "checkpoint": None,
            "artist_id": artist_id,
            "template": "reference",
            "prompt": path.name,  # the original file name, for the gallery
            "negative_prompt": "",
            "seed": -1,
            "steps": 0,
            "guidance": 0.0,
            "scheduler": "",
            "sha256": sha,
            "created_at": now,
        }
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rgb = img.convert("RGB")
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            result.errors[str(path)] = message
            records.append({**record, "error": f"{path.name}: {message}"})
            continue
        record.update(width=rgb.width, height=rgb.height, path=rel, thumb_path=thumb_rel)
        target = workdir.root / rel
        if not target.is_file():
            with atomic_path(target) as tmp:
                rgb.save(tmp, format="PNG")
        thumb = workdir.root / thumb_rel
        if not thumb.is_file():
            small = rgb.copy()
            small.thumbnail((THUMB_SIDE, THUMB_SIDE))
            with atomic_path(thumb) as tmp:
                small.save(tmp, format="JPEG", quality=85)
        records.append(record)
        result.added.append(image_id)
    key = hashlib.sha256(",".join(sorted(r["unit_id"] for r in records)).encode()).hexdigest()[:12]
    shard = workdir.manifests / "references" / f"{artist_id}-{key}.parquet"
    if not shard.is_file():
        write_shard(records, shard)
    result.shard = str(shard)
    if clip is not None and result.added:
        write_prototypes(workdir, clip, records)
        result.prototype_models.append(clip.key)
    return result


def write_prototypes(workdir: Workdir, clip: LoadedClip, records: list[dict] | None = None) -> int:
    """Embed the reference images (skipping done ones) and write them with each artist's
    prototype to the store in one transaction. Returns the number of artists written."""
    import numpy as np
    import pandas as pd

    from evaluator.embed import embed_images, load_embeddings
    from evaluator.manifest import read_manifests
    from evaluator.store import open_store, transaction, upsert_df

    frame = pd.DataFrame(records) if records is not None else read_manifests(workdir.manifests)
    refs = frame[(frame["source"] == "reference") & frame["error"].isna() & frame["path"].notna()]
    if refs.empty:
        return 0
    embed_images(workdir, clip, refs[["image_id", "path"]], num_workers=0, progress=False)
    ids, vecs = load_embeddings(workdir, clip.key, ids=refs["image_id"].tolist())
    pos = {int(i): k for k, i in enumerate(ids)}
    rows, protos = [], []
    for artist, part in refs.groupby("artist_id", sort=True):
        have = [pos[int(i)] for i in part["image_id"] if int(i) in pos]
        for i in part["image_id"]:
            rows.append({"artist_id": artist, "image_id": int(i)})
        if have:
            mean = vecs[have].mean(axis=0)
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
            protos.append({"artist_id": artist, "model": clip.key, "n": len(have), "embedding": mean.astype(np.float32).tolist()})
    all_manifest = read_manifests(workdir.manifests)
    image_rows = all_manifest[all_manifest["image_id"].isin(refs["image_id"])]
    with open_store(workdir.store) as con, transaction(con):
        upsert_df(con, "images", image_rows, key=["image_id"])
        upsert_df(con, "reference_images", pd.DataFrame(rows), key=["artist_id", "image_id"])
        upsert_df(con, "reference_prototypes", pd.DataFrame(protos), key=["artist_id", "model"])
    return len(protos)
