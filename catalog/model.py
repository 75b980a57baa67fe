"""Catalog rows: the ``Artist`` record, loading ``styles.csv`` and writing it back.

Reads a catalog CSV (``load_catalog``: the given path, ``$ATELIER_CATALOG`` or the
packaged ``catalog/data/styles.csv``) and writes one (``write_catalog``, atomically);
``catalog_frame`` shapes rows for the store's ``artists`` table without writing it.

``styles.csv`` is UTF-8, comma separated, one header line, one row per artist, sorted by
``artist_id``. Multi-valued fields (aliases, movements, mediums, tags, sources) are one
cell joined with ``catalog.units.LIST_SEPARATOR``. Blank cells mean "unknown". The
columns and cell rules live in ``catalog.schema`` (shared with ``catalog.validate``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from catalog.atomic import atomic_write_text
from catalog.schema import (  # noqa: F401  (re-exported: importers predate catalog.schema)
    ARTIST_ID_PATTERN,
    COLUMNS,
    LIST_COLUMNS,
    RECOGNITION_COLUMNS,
    RECOGNITION_VALUES,
    REQUIRED_COLUMNS,
    escape_tag,
    parse_kind,
    parse_living,
    parse_post_count,
    split_list,
)
from catalog.units import LIST_SEPARATOR
from catalog.validate import validate_text
from evaluator.errors import InputError
from evaluator.workspace import settings

ENV_CATALOG = "ATELIER_CATALOG"
# Shipped inside the package (a symlink to the repository's styles.csv; the wheel build
# copies the file), so an installed atelier has its catalog.
PACKAGED_CATALOG_PATH = Path(__file__).resolve().parent / "data" / "styles.csv"


class CatalogError(InputError):
    """A catalog file that cannot be used; the message lists every problem found."""


class CatalogNotFoundError(InputError, FileNotFoundError):
    """No catalog file at the path asked for (or at the default one).

    Also a ``FileNotFoundError``, which callers catch to fall back on other sources, and
    on purpose not a ``CatalogError``: "invalid catalog" is for a file that exists.
    """


@dataclass(frozen=True, slots=True)
class Artist:
    """One catalog row. List fields are tuples so that an Artist is hashable."""

    artist_id: str
    name: str
    aliases: tuple[str, ...] = ()
    born: int | None = None
    died: int | None = None
    living: bool | None = None
    nationality: str = ""
    movements: tuple[str, ...] = ()
    mediums: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    recognized_sdxl: str = ""
    recognized_sd1: str = ""
    sources: tuple[str, ...] = ()
    notes: str = ""
    # artist | character (catalog.schema.KINDS)
    kind: str = "artist"
    # The Danbooru tag ("ilya_kuvshinov"), blank when the row has none; its post count
    tag: str = ""
    post_count: int | None = None
    # A character's franchise: a Danbooru copyright tag ("kantai_collection"), or blank
    franchise: str = ""
    # Danbooru's aliases of ``tag`` (tag form, ``_`` for spaces); empty without a tag
    tag_aliases: tuple[str, ...] = ()
    # Columns a user added by hand: kept so a load/write round trip loses nothing.
    extra: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def to_row(self) -> dict[str, str]:
        """The CSV cells of this artist (strings, blanks for unknown)."""
        row = {
            "artist_id": self.artist_id,
            "name": self.name,
            "aliases": join_list(self.aliases),
            "born": "" if self.born is None else str(self.born),
            "died": "" if self.died is None else str(self.died),
            "living": "" if self.living is None else ("true" if self.living else "false"),
            "nationality": self.nationality,
            "movements": join_list(self.movements),
            "mediums": join_list(self.mediums),
            "tags": join_list(self.tags),
            "recognized_sdxl": self.recognized_sdxl,
            "recognized_sd1": self.recognized_sd1,
            "sources": join_list(self.sources),
            "notes": self.notes,
            "kind": self.kind,
            "tag": self.tag,
            "post_count": "" if self.post_count is None else str(self.post_count),
            "franchise": self.franchise,
            "tag_aliases": join_list(self.tag_aliases),
        }
        row.update(dict(self.extra))
        return row

    @property
    def prompt_tag(self) -> str:
        """The tag as a prompt needs it (parentheses escaped for A1111/ComfyUI); blank without one."""
        return escape_tag(self.tag) if self.tag else ""

    @property
    def primary_movement(self) -> str:
        """The first listed movement (the builder lists the best-attested first)."""
        return self.movements[0] if self.movements else ""


def join_list(values: Iterable[str]) -> str:
    return LIST_SEPARATOR.join(values)


def artist_from_row(row: dict[str, str]) -> Artist:
    """Build an Artist from validated CSV cells (see catalog.validate for the checks)."""
    cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
    get = cells.get

    def year(name: str) -> int | None:
        value = get(name, "")
        return int(value) if value else None

    extra = tuple((k, row[k]) for k in row if k not in _COLUMN_SET and k is not None)
    name = get("name", "")
    return Artist(
        artist_id=get("artist_id", ""),
        name=name if name.isascii() else unicodedata.normalize("NFC", name),
        aliases=split_list(get("aliases", "")),
        born=year("born"),
        died=year("died"),
        living=parse_living(get("living", "")),
        nationality=get("nationality", ""),
        movements=split_list(get("movements", "")),
        mediums=split_list(get("mediums", "")),
        tags=split_list(get("tags", "")),
        recognized_sdxl=get("recognized_sdxl", "").lower(),
        recognized_sd1=get("recognized_sd1", "").lower(),
        sources=split_list(get("sources", "")),
        notes=get("notes", ""),
        kind=parse_kind(get("kind", "")),
        tag=get("tag", ""),
        post_count=parse_post_count(get("post_count", "")),
        franchise=get("franchise", ""),
        tag_aliases=split_list(get("tag_aliases", "")),
        extra=extra,
    )


_COLUMN_SET = frozenset(COLUMNS)


def default_catalog_path() -> Path:
    """``$ATELIER_CATALOG`` if set, else the packaged ``styles.csv`` (the repository's)."""
    return settings.catalog_path() or PACKAGED_CATALOG_PATH


def load_catalog(path: str | os.PathLike[str] | None = None) -> list[Artist]:
    """Load and validate a catalog; raise ``CatalogError`` listing every error found.

    A missing file raises ``CatalogNotFoundError`` (a ``FileNotFoundError``: callers fall
    back on other sources). Warnings (a BOM, extra columns, ...) do not stop loading; see
    ``catalog.validate``.
    """
    source = default_catalog_path() if path is None else Path(path)
    if not source.is_file():
        raise CatalogNotFoundError(f"catalog {source} not found (set ${ENV_CATALOG} or pass a path)")
    data = source.read_bytes()
    key = (str(source), hashlib.blake2b(data, digest_size=16).hexdigest())
    if key not in _LOADED:
        report = validate_text(data, path=str(source))
        if report.errors:
            raise CatalogError(report.format(only_errors=True))
        _LOADED.clear()  # one catalog kept: the one in use
        _LOADED[key] = tuple(artist_from_row(row) for _, row in report.rows)
    return list(_LOADED[key])


# The last catalog loaded, by (path, digest of its bytes): ~40,000 rows take a second or
# two to validate, and one process (a test session, the CLI) loads the same file many
# times; hashing it takes milliseconds. Artists are frozen, so the rows are shared.
_LOADED: dict[tuple[str, str], tuple[Artist, ...]] = {}


def catalog_to_csv(artists: Sequence[Artist]) -> str:
    """The CSV text of a catalog, rows sorted by artist_id, '\\n' line ends (byte-stable)."""
    extra_names: list[str] = []
    for artist in artists:
        for key, _ in artist.extra:
            if key not in extra_names:
                extra_names.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[*COLUMNS, *extra_names], lineterminator="\n", extrasaction="raise"
    )
    writer.writeheader()
    for artist in sorted(artists, key=lambda a: a.artist_id):
        writer.writerow(artist.to_row())
    return buffer.getvalue()


def write_catalog(artists: Sequence[Artist], path: str | os.PathLike[str]) -> None:
    """Write ``styles.csv`` atomically (a killed process leaves the old file whole)."""
    ids = [a.artist_id for a in artists]
    if len(ids) != len(set(ids)):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise CatalogError(f"duplicate artist_id(s): {', '.join(dupes[:10])}")
    atomic_write_text(path, catalog_to_csv(artists))


def catalog_frame(artists: Sequence[Artist]):
    """A pandas DataFrame with exactly the columns of the store's ``artists`` table.

    born/died/post_count are nullable Int64, living nullable boolean, blank strings become None
    (SQL NULL), list fields stay joined with LIST_SEPARATOR.
    """
    import pandas as pd

    typed = {"born": "Int64", "died": "Int64", "post_count": "Int64", "living": "boolean"}
    data: dict[str, object] = {}
    for column in COLUMNS:  # column by column: ~10x faster than a dict per row
        values = [getattr(a, column) for a in artists]
        if column in typed:
            data[column] = pd.array(values, dtype=typed[column])
        elif column in LIST_COLUMNS:
            data[column] = pd.Series([join_list(v) if v else None for v in values], dtype=object)
        else:
            data[column] = pd.Series([v if v != "" else None for v in values], dtype=object)
    frame = pd.DataFrame(data, columns=list(COLUMNS))
    return frame
