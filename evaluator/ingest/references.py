"""Reference works: real images of an artist, the ground truth of its style.

``add_references(workdir, artist_id, folder)`` imports every image of a folder as a
reference of one artist through the importer (``evaluator.ingest.importer.import_images`` with
``as_reference=True``: PNG copy with its provenance, thumbnail, manifest shard with
``source = 'reference'``, ``reference_images`` rows), so the same painting imported by
``atelier import --reference`` or by ``atelier references add`` is one image. With a CLIP
model it then embeds them and stores the artist's prototype (the normalised mean
embedding) in ``reference_prototypes``; otherwise ``atelier score`` does both.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.errors import InputError

if TYPE_CHECKING:
    from evaluator.embedding.embed import LoadedClip
    from evaluator.workspace.workdir import Workdir


@dataclass
class ReferenceResult:
    artist_id: str
    added: list[int] = field(default_factory=list)  # image ids of this folder's references
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it could not be read
    imported: int = 0  # newly copied now (the rest were there already)
    shard: str | None = None
    prototype_models: list[str] = field(default_factory=list)


def _check_artist(workdir: Workdir, artist_id: str, catalog_path: str | Path | None) -> None:
    """The artist must be a catalog artist (its references would match nothing else)."""
    import difflib

    ids: list[str] = []
    try:
        from catalog.model import load_catalog

        ids = [a.artist_id for a in load_catalog(catalog_path)]
    except (ImportError, FileNotFoundError, OSError):
        if catalog_path is not None:
            raise
        if workdir.store.is_file():
            from evaluator.workspace.store import connect

            con = connect(workdir.store, read_only=True)
            try:
                ids = [r[0] for r in con.execute("SELECT artist_id FROM artists").fetchall()]
            finally:
                con.close()
    if ids and artist_id not in set(ids):
        close = difflib.get_close_matches(artist_id, ids, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"artist {artist_id!r} is not in the catalog{hint}")


def add_references(
    workdir: Workdir,
    artist_id: str,
    folder: str | Path,
    clip: LoadedClip | None = None,
    catalog_path: str | Path | None = None,
    check_catalog: bool = True,
    progress: bool = False,
) -> ReferenceResult:
    """Import the images of ``folder`` as references of ``artist_id``; see the module doc."""
    import hashlib
    import tempfile

    from evaluator.ingest.importer import IMAGE_SUFFIXES, ImportSourceError, import_images
    from evaluator.workspace.manifest import read_manifests

    src = Path(folder).expanduser().resolve()
    if not src.is_dir():
        raise ImportSourceError(f"reference folder {src} does not exist")
    if check_catalog:
        _check_artist(workdir, artist_id, catalog_path)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise InputError(f"reference folder {src} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    # every file labelled with the artist: the importer's labels CSV (file, artist)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "artist"])
    for path in files:
        writer.writerow([path.relative_to(src).as_posix(), artist_id])
    with tempfile.TemporaryDirectory(prefix="atelier-refs-") as tmp:
        labels = Path(tmp) / "labels.csv"
        labels.write_text(buffer.getvalue(), encoding="utf-8")
        summary = import_images(
            src, workdir.root, labels_csv=labels, as_reference=True,
            catalog_path=catalog_path if check_catalog else None, progress=progress,
        )
    result = ReferenceResult(artist_id, imported=summary.imported, shard=summary.manifest_path)
    result.errors = {src / name: reason for name, reason in summary.failed}
    shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    frame = read_manifests(workdir.manifests)
    mine = frame[(frame["source"] == "reference") & (frame["artist_id"] == artist_id)
                 & frame["sha256"].isin(shas) & frame["error"].isna()]
    result.added = sorted(int(i) for i in mine["image_id"])
    result.errors = {str(k): v for k, v in result.errors.items()}
    if clip is not None and result.added:
        write_prototypes(workdir, clip, [artist_id])
        result.prototype_models.append(clip.key)
    return result


def write_prototypes(workdir: Workdir, clip: LoadedClip, artist_ids: list[str] | None = None) -> int:
    """Embed the reference images (skipping done ones) and write each artist's prototype
    with its ``reference_images`` rows in one transaction. Returns the artists written."""
    import numpy as np
    import pandas as pd

    from evaluator.embedding.embed import embed_images, load_embeddings
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.store import open_store, transaction, upsert_df

    frame = read_manifests(workdir.manifests)
    refs = frame[(frame["source"] == "reference") & frame["error"].isna() & frame["path"].notna() & frame["artist_id"].notna()]
    if artist_ids is not None:
        refs = refs[refs["artist_id"].isin(artist_ids)]
    if refs.empty:
        return 0
    embed_images(workdir, clip, refs[["image_id", "path"]], num_workers=0, progress=False)
    ids, vecs = load_embeddings(workdir, clip.key, ids=refs["image_id"].tolist())
    pos = {int(i): k for k, i in enumerate(ids)}
    rows, protos = [], []
    for artist, part in refs.groupby("artist_id", sort=True):
        have = [pos[int(i)] for i in part["image_id"] if int(i) in pos]
        rows.extend({"artist_id": artist, "image_id": int(i)} for i in part["image_id"])
        if have:
            mean = vecs[have].mean(axis=0)
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
            protos.append({"artist_id": artist, "model": clip.key, "n": len(have), "embedding": mean.astype(np.float32).tolist()})
    with open_store(workdir.store) as con, transaction(con):
        upsert_df(con, "reference_images", pd.DataFrame(rows), key=["artist_id", "image_id"])
        if protos:
            upsert_df(con, "reference_prototypes", pd.DataFrame(protos), key=["artist_id", "model"])
    return len(protos)
