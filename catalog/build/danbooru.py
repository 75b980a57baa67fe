"""Danbooru's tag list: artist and character tags, merged with the catalog's artists.

Reads ``danbooru-tags.csv`` (no header: ``name,type,post_count,"aliases"``; types 1
artist, 3 copyright, 4 character; see SOURCES.md); writes nothing. ``add_danbooru``
takes the artists the other sources made and returns them with their tags attached,
plus one new row per artist or character tag that names nobody in the catalog.

Merging a tag with a name is judged on matching keys (``catalog.names.name_key``),
each route named in the report:

* ``tag=name`` / ``tag=alias``: the tag's words are an artist's name or alias
  (``ilya_kuvshinov`` = Ilya Kuvshinov, ``stanley_lau`` = Artgerm's alias Stanley Lau);
* ``family-name-first``: a two-word tag read the other way round (``toriyama_akira`` =
  Akira Toriyama): Danbooru writes Japanese names family name first;
* ``danbooru-alias``: one of the tag's own Danbooru aliases is an artist's name.

and refused (listed by ``--report``) when:

* the tag has a qualifier in parentheses: ``mucha_(muchakai)`` is another person than
  Alphonse Mucha, ``akira_(coffee_curry)`` than Akira Toriyama. The qualifier is kept
  in the key, never stripped, so a qualified tag merges only with a name that carries
  it (or through its own Danbooru alias);
* a key is too short or has no Latin letters to judge by (``c_(theta)``, ``@@@``):
  catalog forms in other scripts are not matched at all (a Cyrillic alias can fold to
  the same ASCII letters);
* a one-word key would match only a one-word *alias* (a bare surname such as "mucha"
  is shorthand, not an identity); one-word *names* (Artgerm, Moebius) do match;
* two catalog rows fit equally, or the artist already took a better-fitting tag;
* the pair is in ``rules.REJECTED_TAG_MERGES`` (reviewed).

A character's franchise is the copyright tag its qualifier names, only when the
qualifier is a copyright tag (``touhou``), one copyright's alias (``kancolle`` ->
``kantai_collection``), or a copyright tag with Danbooru's own ``_(series)``
disambiguator (``fate`` -> ``fate_(series)``); otherwise blank (``_(male)``,
``_(ghost)``, ``_(1st_costume)`` are not franchises).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from catalog.build.records import BuildReport, Dropped
from catalog.build.rules import REJECTED_TAG_MERGES
from catalog.model import Artist
from catalog.names import is_latin, name_key, slugify
from catalog.schema import TAG_PATTERN, looks_like_formula
from evaluator.errors import InputError

DANBOORU_FILE = "danbooru-tags.csv"
DANBOORU_SOURCE = "danbooru"
TYPE_ARTIST, TYPE_COPYRIGHT, TYPE_CHARACTER = "1", "3", "4"
KIND_OF_TYPE = {TYPE_ARTIST: "artist", TYPE_CHARACTER: "character"}
# 100 posts: the cut (17,716 artists and 15,722 characters). Below it a tag's
# images are too few for a fine-tune to have learned it, and the catalog would triple.
DEFAULT_MIN_POSTS = 100
# A key needs this many letters or digits to be judged by ("c", "@@@" cannot be).
MIN_KEY_CHARS = 3
# Routes by strength: an artist claimed by two tags keeps the stronger route's tag.
ROUTES = ("tag=name", "tag=alias", "family-name-first", "danbooru-alias")
_QUALIFIER = re.compile(r"^(?P<base>.+?)_\((?P<qualifier>[^()]+)\)$")


@dataclass(frozen=True, slots=True)
class Tag:
    """One line of the tag list."""

    name: str
    type: str
    post_count: int
    aliases: tuple[str, ...]
    line: int

    @property
    def qualifier(self) -> str:
        match = _QUALIFIER.match(self.name)
        return match.group("qualifier") if match else ""


def read_tags(path: Path, min_posts: int = 0) -> tuple[list[Tag], int]:
    """(the tags the build uses, lines read) of ``danbooru-tags.csv``: every copyright tag
    (franchises) and the artist and character tags with at least ``min_posts`` posts.
    Every line is checked; a malformed one is a ``SourceError`` naming it."""
    from catalog.build.sources import SourceError

    tags: list[Tag] = []
    lines = 0
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            for number, cells in enumerate(csv.reader(handle), start=1):
                if not cells:
                    continue
                lines += 1
                if len(cells) != 4 or not cells[2].strip().isdigit():
                    raise SourceError(f"{path}:{number}: expected name,type,post_count,aliases but got {cells[:5]!r}")
                kind, posts = cells[1].strip(), int(cells[2])
                if kind == TYPE_COPYRIGHT or (kind in KIND_OF_TYPE and posts >= min_posts):
                    aliases = tuple(a.strip() for a in cells[3].split(",") if a.strip())
                    tags.append(Tag(cells[0].strip(), kind, posts, aliases, number))
    except UnicodeDecodeError as exc:
        raise SourceError(f"source file {path} is not UTF-8: {exc}") from None
    return tags, lines


def tag_words(tag: str) -> str:
    """``akira_(coffee_curry)`` -> ``akira (coffee curry)``: the tag as words."""
    return unicodedata.normalize("NFC", tag.replace("_", " ")).strip()


def display_name(tag: str) -> str:
    """The natural form of a new row's name: ``Ilya Kuvshinov``, ``Akira (coffee curry)``.

    Words outside the qualifier get a capital first letter; the qualifier stays as
    written (it is a disambiguator, often a handle).
    """
    match = _QUALIFIER.match(tag)
    base, qualifier = (match.group("base"), match.group("qualifier")) if match else (tag, "")
    words = [w[:1].upper() + w[1:] for w in tag_words(base).split(" ") if w]
    name = " ".join(words)
    return f"{name} ({tag_words(qualifier)})" if qualifier else name


_KEY_CHAR = re.compile(r"[a-z0-9]")


def _usable_key(key: str) -> bool:
    """A matching key (ASCII already) with enough letters or digits to judge by."""
    return len(_KEY_CHAR.findall(key)) >= MIN_KEY_CHARS


class CatalogIndex:
    """Matching keys of the catalog's names and aliases -> rows (Latin-script forms only)."""

    def __init__(self, artists: list[Artist]) -> None:
        self.artists = artists
        self.names: dict[str, set[int]] = defaultdict(set)
        self.aliases: dict[str, set[int]] = defaultdict(set)
        self.bare_aliases: dict[str, set[int]] = defaultdict(set)  # one-word aliases: never matched
        for index, artist in enumerate(artists):
            for form, table in [(artist.name, self.names)] + [(a, self.aliases) for a in artist.aliases]:
                key = name_key(form)
                if not is_latin(form) or not _usable_key(key):
                    continue
                if table is self.aliases and " " not in key:
                    self.bare_aliases[key].add(index)
                else:
                    table[key].add(index)

    def routes(self, tag: Tag) -> list[tuple[str, str, set[int]]]:
        """(route, key, rows) of every key of the tag that names catalog rows."""
        words = tag_words(tag.name)
        keys = [("tag=name", name_key(words), self.names), ("tag=alias", name_key(words), self.aliases)]
        if not tag.qualifier and len(words.split(" ")) == 2:
            swapped = " ".join(reversed(words.split(" ")))
            keys += [("family-name-first", name_key(swapped), self.names),
                     ("family-name-first", name_key(swapped), self.aliases)]
        for alias in tag.aliases:
            if not alias.startswith("/"):  # "/hm": Danbooru's search shortcuts, not names
                alias_key = name_key(tag_words(alias))
                keys += [("danbooru-alias", alias_key, self.names), ("danbooru-alias", alias_key, self.aliases)]
        found = []
        for route, key, table in keys:
            if _usable_key(key) and table.get(key) and (table is self.names or " " in key):
                found.append((route, key, table[key]))
        return found


@dataclass(frozen=True, slots=True)
class Match:
    tag: Tag
    row: int
    route: str
    key: str


def judge_tag(index: CatalogIndex, tag: Tag) -> tuple[Match | None, str | None]:
    """(the merge of an artist tag, or None; the refusal reason when one was refused)."""
    routes = index.routes(tag)
    if not routes:
        return None, _near_miss(index, tag)
    strongest = min(ROUTES.index(route) for route, _, _ in routes)
    best = [(route, key, rows) for route, key, rows in routes if ROUTES.index(route) == strongest]
    rows = set().union(*(r for _, _, r in best))
    if len(rows) > 1:
        names = ", ".join(sorted(repr(index.artists[i].name) for i in rows))
        return None, f"{tag.name}: fits {len(rows)} catalog rows ({names}) equally"
    row = rows.pop()
    artist = index.artists[row]
    rejected = REJECTED_TAG_MERGES.get((tag.name, artist.artist_id))
    if rejected:
        return None, f"{tag.name} -> {artist.artist_id}: {rejected} (rules.REJECTED_TAG_MERGES)"
    return Match(tag, row, best[0][0], best[0][1]), None


def _near_miss(index: CatalogIndex, tag: Tag) -> str | None:
    """Why a tag that *looks* like a catalog name was not merged, for the report."""
    match = _QUALIFIER.match(tag.name)
    base_key = name_key(tag_words(match.group("base"))) if match else ""
    if match and base_key:
        rows = index.names.get(base_key, set()) | index.aliases.get(base_key, set()) | index.bare_aliases.get(base_key, set())
        if rows:
            names = ", ".join(sorted(repr(index.artists[i].name) for i in rows))
            return (f"{tag.name}: the qualifier ({match.group('qualifier')}) names another person than "
                    f"{names}; a qualifier is never stripped to merge")
    key = name_key(tag_words(tag.name))
    if not _usable_key(key):
        return f"{tag.name}: key {key!r} is too short to match a name (fewer than {MIN_KEY_CHARS} letters or digits)"
    if key in index.bare_aliases:
        names = ", ".join(sorted(repr(index.artists[i].name) for i in index.bare_aliases[key]))
        return f"{tag.name}: matches only the one-word alias {key!r} of {names} (a bare surname is not an identity)"
    return None


class Franchises:
    """Copyright tags and their aliases: which franchise a character's qualifier names."""

    def __init__(self, tags: list[Tag]) -> None:
        self.copyrights = {t.name for t in tags if t.type == TYPE_COPYRIGHT}
        self.by_alias: dict[str, set[str]] = defaultdict(set)
        for tag in tags:
            if tag.type == TYPE_COPYRIGHT:
                for alias in tag.aliases:
                    self.by_alias[alias].add(tag.name)

    def of(self, character_tag: str) -> str:
        """The copyright tag the qualifier names, or "" (no qualifier, or not a franchise)."""
        match = _QUALIFIER.match(character_tag)
        if not match:
            return ""
        qualifier = match.group("qualifier")
        if qualifier in self.copyrights:
            return qualifier
        owners = self.by_alias.get(qualifier, set())
        if len(owners) == 1:
            return next(iter(owners))
        series = f"{qualifier}_(series)"
        return series if not owners and series in self.copyrights else ""


def _row_problem(tag: Tag, name: str) -> str | None:
    """Why a tag cannot become a row of its own (reported as a drop)."""
    if looks_like_formula(tag.name) or looks_like_formula(name):
        return "the tag starts with a spreadsheet formula character (=, +, -, @)"
    if not tag.name or "," in tag.name or any(ch.isspace() for ch in tag.name) or tag.name != tag.name.lower():
        return "not a Danbooru tag (blank, comma, space or capital letter)"
    return None


def stored_aliases(tag: Tag) -> tuple[str, ...]:
    """The tag's Danbooru aliases a catalog cell can hold: valid tags, no list separator, no
    formula start; sorted, so a rebuild writes the same cell."""
    keep = {a for a in tag.aliases
            if a != tag.name and TAG_PATTERN.match(a) and ";" not in a and not looks_like_formula(a)}
    return tuple(sorted(keep))


def _new_row(tag: Tag, name: str, artist_id: str, franchises: Franchises) -> Artist:
    kind = KIND_OF_TYPE[tag.type]
    return Artist(
        artist_id=artist_id,
        name=name,
        sources=(DANBOORU_SOURCE,),
        kind=kind,
        tag=tag.name,
        post_count=tag.post_count,
        franchise=franchises.of(tag.name) if kind == "character" else "",
        tag_aliases=stored_aliases(tag),
    )


def new_ids(
    tags: list[tuple[str, str]], taken: set[str], pinned: dict[tuple[str, str], str] | None = None
) -> list[str]:
    """A slug per new row (the catalog's slug rule over the tag's words), never one in
    ``taken``: a slug already used gets ``-2``, ``-3``... in the rows' order (artists
    before characters, then by tag), so a rebuild gives the same ids. ``tags`` are
    (kind, tag) pairs; ``pinned`` ((kind, tag) -> the id a previous catalog gave it) wins when that id is free: ids are a contract, and
    a newer tag list must not move "-2" from one row to another."""
    pinned = {t: i for t, i in (pinned or {}).items() if i not in taken}
    taken |= set(pinned.values())
    ids = []
    for key in tags:
        if key in pinned:
            ids.append(pinned[key])
            continue
        tag = key[1]
        base = slugify(tag_words(tag)) or f"tag-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"
        candidate, number = base, 1
        while candidate in taken:
            number += 1
            candidate = f"{base}-{number}"
        taken.add(candidate)
        ids.append(candidate)
    return ids


def _attach(artist: Artist, match: Match) -> Artist:
    sources = artist.sources if DANBOORU_SOURCE in artist.sources else (*artist.sources, DANBOORU_SOURCE)
    return dataclasses.replace(artist, tag=match.tag.name, post_count=match.tag.post_count, sources=sources,
                               tag_aliases=stored_aliases(match.tag))


def claim_artists(index: CatalogIndex, tags: list[Tag], report: BuildReport) -> dict[int, Match]:
    """Catalog row -> the artist tag merged with it (the strongest route, then the most posts)."""
    claims: dict[int, list[Match]] = defaultdict(list)
    for tag in tags:
        match, refusal = judge_tag(index, tag)
        if refusal:
            report.tag_refused.append(refusal)
        if match:
            claims[match.row].append(match)
    chosen: dict[int, Match] = {}
    for row, matches in sorted(claims.items()):
        matches.sort(key=lambda m: (ROUTES.index(m.route), -m.tag.post_count, m.tag.name))
        chosen[row] = matches[0]
        for other in matches[1:]:
            report.tag_refused.append(
                f"{other.tag.name}: {index.artists[row].artist_id} already has the tag {matches[0].tag.name} "
                f"({matches[0].route}); {other.tag.name} ({other.route}) becomes a row of its own")
    return chosen


def add_danbooru(
    artists: list[Artist], tags: list[Tag], report: BuildReport, min_posts: int = DEFAULT_MIN_POSTS,
    previous: list[Artist] | None = None,
) -> list[Artist]:
    """The catalog's artists with their tags, plus a row per unmatched artist or character tag
    (keeping the id a ``previous`` catalog gave the same kind and tag)."""
    if min_posts < 0:
        raise InputError(f"min_posts must be >= 0 but is {min_posts}")
    wanted = sorted((t for t in tags if t.type in KIND_OF_TYPE and t.post_count >= min_posts),
                    key=lambda t: (t.type != TYPE_ARTIST, t.name))
    report.danbooru_tags = {kind: sum(KIND_OF_TYPE[t.type] == kind for t in wanted) for kind in KIND_OF_TYPE.values()}
    index = CatalogIndex(artists)
    chosen = claim_artists(index, [t for t in wanted if t.type == TYPE_ARTIST], report)
    merged = list(artists)
    for row, match in chosen.items():
        merged[row] = _attach(artists[row], match)
        report.merges[f"tag:{match.route}"] += 1
        report.merge_log.append(f"tag:{match.route}: {match.tag.name} ({match.tag.post_count} posts) = "
                                f"{artists[row].artist_id} {artists[row].name!r} (key {match.key!r})")
    attached = {m.tag.name for m in chosen.values()}
    franchises = Franchises(tags)
    kept: list[tuple[Tag, str]] = []
    for tag in wanted:
        if tag.name in attached and tag.type == TYPE_ARTIST:
            continue
        name = display_name(tag.name)
        problem = _row_problem(tag, name)
        if problem:
            report.dropped.append(Dropped(DANBOORU_SOURCE, tag.line, tag.name, problem))
            continue
        kept.append((tag, name))
    pinned = {(a.kind, a.tag): a.artist_id for a in previous or () if a.tag}
    keys = [(KIND_OF_TYPE[tag.type], tag.name) for tag, _ in kept]
    ids = new_ids(keys, {a.artist_id for a in artists}, pinned)
    report.slug_collisions += sum(i != slugify(tag_words(tag.name)) for (tag, _), i in zip(kept, ids, strict=True))
    new_rows = [_new_row(tag, name, i, franchises) for (tag, name), i in zip(kept, ids, strict=True)]
    report.franchises = sum(bool(r.franchise) for r in new_rows)
    return merged + new_rows
