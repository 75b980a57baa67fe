"""Shaping each merged group of records into one catalog row, and giving it an id.

Reads and writes nothing: ``make_artist`` turns the records of one artist into a
``catalog.model.Artist`` (best name, aliases, years, facts, recognition, notes on every
disagreement between sources) and ``assign_ids`` gives each a unique slug.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from catalog.build.records import BuildReport, Record
from catalog.build.rules import PRIORITY, SOURCES
from catalog.model import Artist
from catalog.names import PARTICLES, ascii_fold, is_latin, name_key, slugify


def _surface(text: str) -> str:
    return re.sub(r"[\s.,]", "", text.casefold())


def _name_rank(priority: int, form: str) -> tuple:
    return (
        not is_latin(form),
        priority,
        " " not in form,  # prefer "Jean Giraud" to "Moebius" among equals
        form == form.lower(),
        ascii_fold(form) == form,  # prefer the accented form
        form,
    )


def _pick_name(group: list[Record]) -> str:
    forms = [(p, f) for r in group for p, f in r.display_forms]
    best = min(forms, key=lambda pf: _name_rank(*pf))[1]
    # put accents back: "Salvador Dali" -> "Salvador Dalí" when a source writes it so
    if ascii_fold(best) == best:
        accented = sorted(
            f for _, f in forms if f != best and ascii_fold(f) == best and f != f.lower()
        )
        if accented:
            best = accented[0]
    if best == best.lower() and " " in best:
        # only an all-lower-case form was seen ("ridley scott"): capitalize the words
        best = " ".join(
            w if w in PARTICLES else "-".join(p[:1].upper() + p[1:] for p in w.split("-"))
            for w in best.split(" ")
        )
    return best


def _ordered_unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for value in values:
        folded = value.casefold()
        if value and folded not in seen:
            seen.add(folded)
            out.append(value)
    return out


def make_artist(group: list[Record], artist_id: str) -> Artist:
    """One catalog row from the records of one artist."""
    group = sorted(group, key=lambda r: (PRIORITY[r.source], r.line))
    name = _pick_name(group)
    born, died, living, notes = _life(group)
    recognized_sdxl, recognized_sd1, recognition_notes = _recognition(group)
    notes = _ordered_unique([n for r in group for n in r.notes] + notes + recognition_notes)
    return Artist(
        artist_id=artist_id,
        name=name,
        aliases=tuple(_aliases(group, name)),
        born=born,
        died=died,
        living=living,
        nationality="; ".join(_ordered_unique(n for r in group for n in r.nationality)),
        movements=tuple(_movements(group)),
        mediums=tuple(_ordered_unique(m for r in group for m in r.mediums)),
        tags=tuple(_ordered_unique(t for r in group for t in r.tags)),
        recognized_sdxl=recognized_sdxl,
        recognized_sd1=recognized_sd1,
        sources=tuple(s for s in SOURCES if any(r.source == s for r in group)),
        notes=" | ".join(notes),
    )


def _aliases(group: list[Record], name: str) -> list[str]:
    """Every other form of the name, once (ignoring case, spaces, dots and commas).

    Unconfident links (a guess from the line's layout) count only when some record has
    that key; an all-lower-case form is left out when a cased form of it exists.
    """
    forms = [f for r in group for _, f in r.display_forms]
    forms += [link.name for r in group for link in r.links if link.confident]
    by_key = {r.key for r in group}
    forms += [link.name for r in group for link in r.links if not link.confident and name_key(link.name) in by_key]
    seen_surfaces = {_surface(name)}
    aliases = []
    for form in sorted(set(forms), key=lambda f: (f.casefold(), f)):
        surface = _surface(form)
        if surface in seen_surfaces or form == form.lower() and any(
            _surface(ascii_fold(a)) == _surface(ascii_fold(form)) for a in forms if a != form
        ):
            continue
        seen_surfaces.add(surface)
        aliases.append(form)
    return aliases


def _first_fact(group: list[Record], attribute: str) -> tuple[int | None, list[str]]:
    """The most trusted source's value, and a note when the sources disagree."""
    values = [(getattr(r, attribute), r.source) for r in group if getattr(r, attribute) is not None]
    distinct = sorted({v for v, _ in values})
    if len(distinct) > 1:
        shown = ", ".join(f"{v} ({s})" for v, s in values)
        return values[0][0], [f"sources disagree on {attribute}: {shown}"]
    return (values[0][0] if values else None), []


def _life(group: list[Record]) -> tuple[int | None, int | None, bool | None, list[str]]:
    """(born, died, living, notes): a death year wins over "living"; impossible years go."""
    born, born_notes = _first_fact(group, "born")
    died, died_notes = _first_fact(group, "died")
    notes = born_notes + died_notes
    if died is not None:
        living: bool | None = False
        if any(r.living for r in group):
            notes.append(f"listed as living by one source but died {died} by another")
    else:
        living = True if any(r.living for r in group) else None
    if born is not None and died is not None and died < born:
        notes.append(f"sources give died {died} before born {born}; years dropped")
        born = died = None
        living = None
    return born, died, living, notes


def _movements(group: list[Record]) -> list[str]:
    """Movements by total weight (WikiArt's image counts), heaviest first."""
    weights: dict[str, int] = defaultdict(int)
    for r in group:
        for movement, weight in r.movements:
            weights[movement] += weight
    return sorted(weights, key=lambda m: (-weights[m], m))


def _recognition(group: list[Record]) -> tuple[str, str, list[str]]:
    """(recognized_sdxl, recognized_sd1, notes): sources that disagree make it "unsure"."""
    notes: list[str] = []
    sdxl_votes = sorted({r.recognized_sdxl for r in group if r.recognized_sdxl})
    recognized_sdxl = sdxl_votes[0] if len(sdxl_votes) == 1 else ("unsure" if sdxl_votes else "")
    sd1_votes = {r.recognized_sd1 for r in group if r.recognized_sd1}
    if len(sd1_votes) == 1:
        recognized_sd1 = next(iter(sd1_votes))
    elif sd1_votes:
        recognized_sd1 = "unsure"
        votes = ", ".join(f"{r.recognized_sd1} ({r.source})" for r in group if r.recognized_sd1)
        notes.append(f"SD 1.5 recognition disagrees between sources: {votes}")
    else:
        recognized_sd1 = ""
    if len(sdxl_votes) > 1:
        notes.append(f"SDXL recognition disagrees: {', '.join(sdxl_votes)}")
    return recognized_sdxl, recognized_sd1, notes


def assign_ids(groups: list[list[Record]], report: BuildReport) -> list[str]:
    """A slug per group; people sharing a slug get a year (or a number) appended."""
    base = []
    for group in groups:
        slug = slugify(_pick_name(group))
        if not slug:
            slug = next((slugify(r.key) for r in group if slugify(r.key)), "artist")
        base.append(slug)
    by_slug: dict[str, list[int]] = defaultdict(list)
    for index, slug in enumerate(base):
        by_slug[slug].append(index)
    ids = list(base)
    taken = set(base)
    for slug, indices in sorted(by_slug.items()):
        if len(indices) == 1:
            continue
        report.slug_collisions += len(indices) - 1

        def rank(i: int) -> tuple:
            group = groups[i]
            return (-len({r.source for r in group}), -len(group), min(r.key for r in group), i)

        ordered = sorted(indices, key=rank)
        for position, index in enumerate(ordered[1:], start=2):
            group = groups[index]
            years = [r.born for r in group if r.born] or [r.died for r in group if r.died]
            candidate = f"{slug}-{min(years)}" if years else f"{slug}-{position}"
            number = position
            while candidate in taken:
                number += 1
                candidate = f"{slug}-{number}"
            taken.add(candidate)
            ids[index] = candidate
    return ids
