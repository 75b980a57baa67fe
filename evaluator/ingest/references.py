"""Reference works: real images of an artist, the ground truth of its style.

``add_references(workdir, folder, artist=...)`` imports reference works through the
importer (``evaluator.ingest.importer.import_images`` with ``as_reference=True``: the
original's bytes, or a PNG when it needs converting, with its provenance, thumbnail, manifest shard with ``source = 'reference'``,
``reference_images`` rows), so the same painting imported by ``atelier import
--reference`` or by ``atelier references add`` is one image. Three layouts:

- one artist, one folder: every image under FOLDER is a work of ``artist``;
- a folder of per-artist folders, ``refs/<artist>/...``: each folder names its artist;
- a labels CSV (``file,artist``, paths relative to FOLDER), as for ``atelier import``.

One rule for every artist named: it must resolve through the catalog (the given one, or
atelier's), by id or by name or alias ("Claude Monet" and "claude-monet" alike), or the
whole call is refused before anything is written, with close names suggested: a
reference of an artist the catalog does not know would match no image's artist.

With a CLIP model it then embeds them and stores each artist's prototype (the
normalised mean embedding) in ``reference_prototypes``; otherwise ``atelier score``
does both. Reads the folder, the labels and the catalog; writes through the importer.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.errors import InputError

if TYPE_CHECKING:
    from evaluator.embedding.embed import LoadedClip
    from evaluator.ingest.importer import ArtistIndex
    from evaluator.workspace.workdir import Workdir


@dataclass
class ReferenceResult:
    artist_id: str
    added: list[int] = field(default_factory=list)  # image ids of this artist's references from this call
    errors: dict[str, str] = field(default_factory=dict)  # file -> why it could not be read
    imported: int = 0  # newly copied now (the rest were there already)
    shard: str | None = None
    prototype_models: list[str] = field(default_factory=list)


def _catalog_index(catalog_path: str | Path | None) -> tuple[ArtistIndex, list[tuple[str, str]]]:
    """The catalog's name index and its (artist_id, name) pairs (the same rule as
    ``atelier import --reference``: no catalog, no references)."""
    from catalog.model import load_catalog
    from evaluator.ingest.importer import ArtistIndex

    try:
        artists = load_catalog(catalog_path)
    except FileNotFoundError as exc:
        raise InputError(f"no catalog to check reference artists against ({exc}): pass --catalog styles.csv") from exc
    return ArtistIndex(artists), [(a.artist_id, a.name) for a in artists]


def resolve_artist(index: ArtistIndex, known: list[tuple[str, str]], name: str, where: str) -> str:
    """The catalog id of ``name`` (an id, a name or an alias); refused with close names."""
    found = index.lookup(name)
    if found is not None:
        return found
    ids = [a for a, _ in known]
    names = {n: a for a, n in known}
    close = difflib.get_close_matches(name, ids, n=3, cutoff=0.6)
    close += [f"{n!r} ({names[n]})" for n in difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    raise InputError(f"{where}: artist {name!r} is not in the catalog{hint} (reference works must belong to a "
                     "catalog artist; pass --catalog with one that has it)")


def _image_files(folder: Path) -> list[Path]:
    """The images the importer will take (its walk: no link leaving the folder, no loop)."""
    from evaluator.ingest.importer import IMAGE_SUFFIXES, source_files

    files, _ = source_files(folder)
    return sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def reference_labels(
    folder: Path, *, artist: str | None = None, labels_csv: str | Path | None = None,
    catalog_path: str | Path | None = None,
) -> dict[str, str]:
    """Every reference file under ``folder`` (relative path) -> its catalog artist id,
    checked in full before anything is written (see the module doc for the layouts)."""
    from evaluator.ingest.importer import read_labels

    if artist is not None and labels_csv is not None:
        raise InputError("name an ARTIST or give --labels, not both")
    index, known = _catalog_index(catalog_path)
    files = _image_files(folder)
    if not files:
        raise InputError(f"reference folder {folder} holds no image")
    rel = [p.relative_to(folder).as_posix() for p in files]
    if artist is not None:
        artist_id = resolve_artist(index, known, artist, "ARTIST")
        return dict.fromkeys(rel, artist_id)
    if labels_csv is not None:
        labels = read_labels(Path(labels_csv), folder)
        out = {}
        for name, label in labels.items():
            if not label.artist:
                raise InputError(f"{labels_csv}: line {label.line}: a reference work needs an artist")
            out[name] = resolve_artist(index, known, label.artist, f"{labels_csv}: line {label.line}")
        unlabelled = [r for r in rel if r not in out and r.rsplit("/", 1)[-1] not in out]
        if unlabelled:
            raise InputError(f"{labels_csv} labels no artist for {len(unlabelled)} image(s) under {folder}, "
                             f"e.g. {unlabelled[0]}: label them or move them out")
        return out
    loose = [r for r in rel if "/" not in r]
    if loose:
        raise InputError(f"{folder} holds images directly (e.g. {loose[0]}): name their ARTIST, give --labels, "
                         "or put each artist's works in a folder named after the artist (refs/<artist>/...)")
    resolved: dict[str, str] = {}
    for top in sorted({r.split("/", 1)[0] for r in rel}):
        resolved[top] = resolve_artist(index, known, top, f"folder {folder / top}")
    return {r: resolved[r.split("/", 1)[0]] for r in rel}


def add_references(
    workdir: Workdir,
    folder: str | Path,
    *,
    artist: str | None = None,
    labels_csv: str | Path | None = None,
    clip: LoadedClip | None = None,
    catalog_path: str | Path | None = None,
    progress: bool = False,
) -> list[ReferenceResult]:
    """Import the reference works under ``folder`` (see the module doc); one result per artist."""
    import hashlib
    import tempfile

    from evaluator.ingest.importer import ImportSourceError, import_images
    from evaluator.workspace.manifest import read_manifests

    src = Path(folder).expanduser().resolve()
    if not src.is_dir():
        raise ImportSourceError(f"reference folder {src} does not exist")
    mapping = reference_labels(src, artist=artist, labels_csv=labels_csv, catalog_path=catalog_path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "artist"])
    writer.writerows(sorted(mapping.items()))
    with tempfile.TemporaryDirectory(prefix="atelier-refs-") as tmp:
        labels = Path(tmp) / "labels.csv"
        labels.write_text(buffer.getvalue(), encoding="utf-8")
        summary = import_images(src, workdir.root, labels_csv=labels, as_reference=True,
                                catalog_path=catalog_path, progress=progress)
    failed = dict(summary.failed)
    frame = read_manifests(workdir.manifests)
    frame = frame[(frame["source"] == "reference") & frame["error"].isna()]
    results = []
    for artist_id in sorted(set(mapping.values())):
        mine = [r for r, a in mapping.items() if a == artist_id]
        shas = {hashlib.sha256((src / r).read_bytes()).hexdigest() for r in mine if r not in failed}
        rows = frame[(frame["artist_id"] == artist_id) & frame["sha256"].isin(shas)]
        result = ReferenceResult(artist_id, sorted(int(i) for i in rows["image_id"]), shard=summary.manifest_path,
                                 errors={str(src / r): failed[r] for r in mine if r in failed})
        results.append(result)
    if results:
        results[0].imported = summary.imported
    if clip is not None and any(r.added for r in results):
        write_prototypes(workdir, clip, [r.artist_id for r in results if r.added])
        for r in results:
            r.prototype_models.append(clip.key)
    return results


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
