"""Build ``styles.csv`` from the public artist lists in ``shared/data/artist-sources``.

Reads the source lists (``catalog.build.sources``; default folder
``../shared/data/artist-sources`` beside the repository) and writes ``styles.csv``
atomically, plus the full report when asked (``build_styles_csv``). The steps live in
``sources`` (reading), ``merge`` (grouping records into artists), ``artists`` (one row
per group) and ``rules`` (the reviewed tables); ``records`` holds what passes between
them.

Steps (each deterministic, so a rebuild from the same sources is byte-identical):

1. **Read** every source into records (one per line or entry): a display name, a
   matching key (``catalog.names.name_key``), the other names the line carries (links),
   and facts (years, tags, movements, mediums, recognition). Lines that are not artists
   are dropped with a reason (job titles such as "senior artist", the sheet's own "this
   artist doesn't exist", blank names).
2. **Merge** records into artists, in passes, each counted in the report:
   ``same-name`` (equal keys: case, accents, spacing, dots of initials, "N/A" first
   names do not matter), ``link`` (a name another line gives for the same artist:
   "Hokusai (Katsushika Hokusai)", "AKA Moebius", a cheat-sheet prompt "style of Max
   Ernst", "also tested 'Peter Konig'"), then heuristics judged on one snapshot, each
   requiring a single fitting candidate on both sides: ``initials`` ("J. M. W. Turner" =
   "Joseph Mallord William Turner"; ``initials+year``: "William Turner" with the same
   death year), ``surname`` (a bare "Monet" = the artist of that surname that most
   lists name), ``middle-name`` ("Edwin Landseer" = "Edwin Henry Landseer"),
   ``spelling`` (transliterations and one-letter slips in a given name: "Aleksey" /
   "Alexei", "Katsuchika" / "Katsushika"), ``same-year`` (same surname and initial, same
   death year: "Jan" / "Johannes Vermeer"), ``surname-spelling`` ("Panini" / "Pannini",
   same given names), ``spacing`` and ``word-order``
   ("Kawase Hasui" / "Hasui Kawase").
   A merge is refused when the two sides disagree on their years (died 1510 vs living),
   when a link's target is claimed by two different artists ("AKA Monsù Desiderio" is
   given for two painters), when one list names both forms (a list naming "Gavin" and
   "Gawen Hamilton" means two painters), or when the pair is in ``REJECTED_LINKS`` /
   ``DISTINCT_PEOPLE`` (reviewed false positives). Generational markers are part of the
   key, so "the Elder" and "the Younger" never merge. ``--report FILE`` lists every
   heuristic merge for review.
3. **Danbooru** (``catalog.build.danbooru``, when ``danbooru-tags.csv`` is in the
   folder): artist and character tags with at least ``min_posts`` posts (default 100).
   An artist tag that names a catalog artist is merged with it (its ``tag`` and
   ``post_count`` filled in, ``danbooru`` added to its sources); every other tag becomes
   a row of its own (``kind`` artist or character; a character's ``franchise`` from its
   qualifier). The ids of step 4's artists never change: new rows take the slug of the
   tag's words, with ``-2``, ``-3``... when it is taken, or the id a previous catalog
   (``--previous``, by default the file being replaced) gave the same kind and tag. ``--report`` lists every tag
   merge and every refusal (a qualifier, an ambiguous or too-short key, ...).
4. **Write** one row per artist or character, sorted by ``artist_id`` (a slug of the
   display name; people who share a slug get their birth or death year appended).
"""

from __future__ import annotations

import time
from pathlib import Path

from catalog.atomic import atomic_write_text
from catalog.build.artists import assign_ids, make_artist
from catalog.build.danbooru import DANBOORU_FILE, DEFAULT_MIN_POSTS, add_danbooru, read_tags
from catalog.build.merge import Groups, merge_records
from catalog.build.records import BuildReport, Dropped, Record
from catalog.build.rules import DISTINCT_PEOPLE, PRIORITY, REJECTED_LINKS, SOURCE_FILES, SOURCES
from catalog.build.sources import (
    SourceError,
    Vocabulary,
    collect_first_names,
    display_movement,
    read_sources,
    wikiart_display_name,
)
from catalog.model import Artist, write_catalog

__all__ = [
    "DISTINCT_PEOPLE",
    "PRIORITY",
    "REJECTED_LINKS",
    "SOURCES",
    "SOURCE_FILES",
    "DEFAULT_MIN_POSTS",
    "BuildReport",
    "Dropped",
    "Groups",
    "Record",
    "SourceError",
    "Vocabulary",
    "assign_ids",
    "build_catalog",
    "build_styles_csv",
    "collect_first_names",
    "default_sources_dir",
    "display_movement",
    "make_artist",
    "merge_records",
    "read_sources",
    "wikiart_display_name",
]


def build_catalog(
    sources_dir: str | Path, min_posts: int = DEFAULT_MIN_POSTS, previous: list[Artist] | None = None
) -> tuple[list[Artist], BuildReport]:
    """Read, merge and shape every source; return the rows and what happened.

    ``min_posts``: the fewest Danbooru posts a tag needs to be kept (see ``catalog.build.danbooru``);
    ``previous``: a catalog built before, whose tag rows keep their ids.
    """
    started = time.perf_counter()
    report = BuildReport()
    records, _ = read_sources(Path(sources_dir), report)
    groups = merge_records(records, report)
    ids = assign_ids(groups, report)
    artists = [make_artist(group, artist_id) for group, artist_id in zip(groups, ids, strict=True)]
    artists.sort(key=lambda a: a.artist_id)
    danbooru = Path(sources_dir) / DANBOORU_FILE
    if danbooru.is_file():
        tags, lines = read_tags(danbooru, min_posts)
        report.danbooru = f"read {lines} tag(s) from {DANBOORU_FILE}, kept those with >= {min_posts} posts"
        artists = add_danbooru(artists, tags, report, min_posts, previous)
        artists.sort(key=lambda a: a.artist_id)
    else:
        report.danbooru = f"no {DANBOORU_FILE} in {sources_dir}: built without Danbooru artists and characters"
    report.kinds = {kind: sum(a.kind == kind for a in artists) for kind in sorted({a.kind for a in artists})}
    report.artists = len(artists)
    report.multi_source_artists = sum(len(a.sources) > 1 for a in artists)
    report.cross_source_merges = sum(len({r.source for r in g}) - 1 for g in groups)
    report.seconds = time.perf_counter() - started
    return artists, report


def default_sources_dir() -> Path:
    """``../shared/data/artist-sources`` beside the repository (the clone holding ``catalog/``)."""
    clone = Path(__file__).resolve().parents[2]  # <clone>/catalog/build/__init__.py
    return clone.parent / "shared" / "data" / "artist-sources"


def build_styles_csv(
    sources_dir: str | Path, out: str | Path, report_path: str | Path | None = None, min_posts: int = DEFAULT_MIN_POSTS,
    previous: str | Path | None = None,
) -> BuildReport:
    """Build and write ``styles.csv`` (atomically); optionally write the full report.

    ``previous``: a catalog file whose Danbooru rows keep their ids (``catalog build``
    passes the file it is about to replace, so a newer tag list moves no id).
    """
    from catalog.model import load_catalog

    artists, report = build_catalog(sources_dir, min_posts, load_catalog(previous) if previous else None)
    write_catalog(artists, out)
    if report_path:
        atomic_write_text(report_path, report.details() + "\n")
    return report
