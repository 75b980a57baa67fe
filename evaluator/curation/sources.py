"""What a curation run reads: a folder (with an optional labels CSV) or the workdir's images.

A folder is walked recursively for the import's image suffixes (a file that only claims
to be an image is still curated, and flagged ``unreadable``); other files are listed as
ignored. The labels are the import's CSV (``file,artist[,prompt]...``, read by
``evaluator.ingest.importer.read_labels``): the artist becomes the file's artist id (its
catalog slug) and the prompt its caption. ``--from-store`` curates every stored image
with a file, under its artist id and prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluator.errors import InputError
from evaluator.workspace.workdir import Workdir

STORE_SOURCE = "store"
NO_ARTIST = ("", "_baseline", "_unknown", "_invalid")  # not an artist to find outliers of


@dataclass(frozen=True)
class Item:
    """One file to curate."""

    path: Path  # absolute
    key: str  # relative to its source: the row's `path`
    artist_id: str | None = None
    caption: str | None = None
    image_id: int | None = None


@dataclass
class Source:
    name: str  # 'store', or the folder's resolved path
    items: list[Item]
    ignored: list[str] = field(default_factory=list)
    unlabelled: int = 0
    labels_missing: list[str] = field(default_factory=list)  # labels naming no file


def folder_source(src: Path, labels_csv: Path | None, wd: Workdir) -> Source:
    """Every image-suffixed file under ``src`` (sorted), with its labels."""
    from evaluator.ingest.importer import IMAGE_SUFFIXES, read_labels, slugify

    src = src.resolve()
    if not src.is_dir():
        raise InputError(f"source {src} is not a folder")
    root = wd.root
    if src == root or root in src.parents or src in root.parents:
        raise InputError(f"source {src} and workdir {root} must not contain each other "
                         "(use --from-store to curate the workdir's own images)")
    labels = read_labels(labels_csv, src) if labels_csv is not None else {}
    items, ignored, unlabelled = [], [], 0
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = path.relative_to(src).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if key != (labels_csv.name if labels_csv else "labels.csv"):
                ignored.append(key)
            continue
        label = labels.get(key)
        unlabelled += label is None
        artist = slugify(label.artist) if label is not None and label.artist else None
        items.append(Item(path, key, artist, label.prompt if label is not None else None))
    found = {item.key for item in items}
    missing = [name for name in labels if name not in found]
    return Source(str(src), items, ignored, unlabelled if labels else 0, missing)


def store_source(wd: Workdir) -> Source:
    """Every image of the store that has a file (generated, imported, references)."""
    from evaluator.workspace.store import connect_read_only

    if not wd.store.is_file():
        raise InputError(f"--from-store: {wd.store} does not exist (import or generate images first)")
    con = connect_read_only(wd.store)
    try:
        rows = con.execute(
            "SELECT image_id, path, artist_id, prompt FROM images WHERE path IS NOT NULL ORDER BY path"
        ).fetchall()
    finally:
        con.close()
    items = []
    for image_id, rel, artist, prompt in rows:
        path = wd.resolve_inside(rel)
        items.append(Item(path, rel, None if artist in NO_ARTIST else artist, prompt or None, int(image_id)))
    return Source(STORE_SOURCE, items)
