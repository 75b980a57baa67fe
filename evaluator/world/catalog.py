"""The world's catalog: its procedural artists as rows of a ``styles.csv``-schema file.

``world.csv`` (shipped beside this module) has one row per world artist, ``kind`` artist
and ``sources`` world, so every stage that reads a catalog (generation plans, the store's
``artists`` table, scoring) reads the world unchanged. The mark, palette and role are in
``tags`` / ``movements`` / ``notes``, so a person browsing the catalog sees what to expect.

Reads nothing but the painter's table; ``write_world_catalog`` writes the CSV atomically.
The committed file is checked against ``world_catalog_text()`` by a test.
"""

from __future__ import annotations

from pathlib import Path

WORLD_CSV = "world.csv"
WORLD_SOURCE = "world"


def world_catalog_path() -> Path:
    """The committed (and packaged) ``world.csv``."""
    return Path(__file__).resolve().parent / WORLD_CSV


def _hex(color) -> str:
    return "#" + "".join(f"{c:02x}" for c in color)


def world_catalog_rows() -> list:
    """The world artists as ``catalog.model.Artist`` rows."""
    from catalog.model import Artist
    from evaluator.world.painter import WORLD_ARTISTS

    rows = []
    for artist in WORLD_ARTISTS:
        palette = " ".join(_hex(c) for c in artist.palette)
        rows.append(Artist(
            artist_id=artist.artist_id, name=artist.name, movements=("procedural",), mediums=("procedural painting",),
            tags=(artist.mark, f"palette {palette}", f"scale {artist.scale:g}", f"softness {artist.softness:g}"),
            sources=(WORLD_SOURCE,), kind="artist",
            notes=f"world artist ({artist.role}): {artist.mark} in {palette}; "
                  + {"known": "the base world model was trained on it",
                     "newcomer": "the base never saw it; a LoRA can teach it",
                     "control": "no model is trained on it"}[artist.role],
        ))
    return rows


def world_catalog_text() -> str:
    """The CSV text ``world.csv`` must hold (byte-stable: sorted rows, '\\n' line ends)."""
    from catalog.model import catalog_to_csv

    return catalog_to_csv(world_catalog_rows())


def write_world_catalog(path: str | Path | None = None) -> Path:
    """Write the world catalog (default: the packaged ``world.csv``) atomically; return its path."""
    from catalog.model import write_catalog

    target = Path(path) if path is not None else world_catalog_path()
    write_catalog(world_catalog_rows(), target)
    return target
