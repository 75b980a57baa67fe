"""Selecting artists: filters, text search and a stratified sample for quick benchmarks.

Filters are case- and accent-insensitive. ``tag``, ``movement`` and ``medium`` match one
element of the list exactly (``"impressionism"`` matches the movement "Impressionism",
not "Post-Impressionism"). ``text`` is a substring of the name, an alias or the id.
``recognized`` is ``"yes"`` / ``"no"`` / ``"unsure"`` / ``"blank"`` (either model), or
``"sdxl=yes"``, ``"sd1=no"``... for one model. ``kind`` keeps artists or characters;
``franchise`` a character's copyright tag (exact, case-insensitive); ``min_posts`` rows
whose Danbooru tag has at least that many posts (a row without a tag has none).

A sample of N is stratified over the primary movement (the first listed): each movement
gets its proportional share (largest remainder; at least one per movement when N allows),
drawn with ``random.Random(seed)``. The result is sorted by artist_id, so the same seed
gives the same selection on every machine.

Reads and writes nothing: it filters a list of ``catalog.model.Artist``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from catalog.model import Artist
from catalog.schema import KINDS, RECOGNITION_VALUES
from evaluator.errors import InputError


def _fold(text: str) -> str:
    from unidecode import unidecode

    return unidecode(text).casefold().strip()


def _parse_recognized(value: str) -> tuple[tuple[str, ...], str]:
    """Return (columns, wanted value) of a --recognized filter."""
    value = value.strip().lower()
    columns: tuple[str, ...] = ("recognized_sdxl", "recognized_sd1")
    if "=" in value:
        model, value = (part.strip() for part in value.split("=", 1))
        model = {"sdxl": "recognized_sdxl", "sd1": "recognized_sd1", "sd15": "recognized_sd1"}.get(
            model, model
        )
        if model not in columns:
            raise InputError(f"recognized filter model must be sdxl or sd1 but is {model!r}")
        columns = (model,)
    if value not in (*RECOGNITION_VALUES, "blank"):
        raise InputError(
            f"recognized must be yes, no, unsure or blank (optionally sdxl=.. / sd1=..) but is {value!r}"
        )
    return columns, "" if value == "blank" else value


def select_artists(
    artists: Sequence[Artist],
    *,
    kind: str | None = None,
    franchise: str | None = None,
    min_posts: int | None = None,
    tag: str | None = None,
    movement: str | None = None,
    medium: str | None = None,
    recognized: str | None = None,
    living: bool | None = None,
    text: str | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> list[Artist]:
    """Artists matching every given filter, optionally a stratified sample of them.

    The filters are keyword-only: each is optional and a positional slip would filter
    on the wrong field. A bad filter or sample raises ``InputError`` (a ``ValueError``).
    """
    if sample is not None and sample < 0:
        raise InputError(f"sample must be >= 0 but is {sample}")
    chosen = _by_kind(artists, kind, franchise, min_posts)
    for value, attribute in ((tag, "tags"), (movement, "movements"), (medium, "mediums")):
        if value:
            wanted = _fold(value)
            chosen = [a for a in chosen if any(_fold(v) == wanted for v in getattr(a, attribute))]
            if not chosen:
                _check_known(artists, attribute, value)
    if recognized:
        columns, wanted = _parse_recognized(recognized)
        chosen = [a for a in chosen if any(getattr(a, c) == wanted for c in columns)]
    if living is not None:
        chosen = [a for a in chosen if a.living is living]
    if text:
        needle = _fold(text)
        chosen = [
            a
            for a in chosen
            if needle in _fold(a.name)
            or needle in a.artist_id
            or any(needle in _fold(alias) for alias in a.aliases)
        ]
    chosen.sort(key=lambda a: a.artist_id)
    if sample is not None:
        chosen = stratified_sample(chosen, sample, seed)
    return chosen


def _check_known(artists: Sequence[Artist], attribute: str, value: str) -> None:
    """A value no row of the catalog has is a typo, not an empty selection: say the close ones."""
    import difflib

    spellings: dict[str, str] = {}
    for artist in artists:
        for item in getattr(artist, attribute):
            spellings.setdefault(_fold(item), item)
    wanted = _fold(value)
    if wanted in spellings:
        return  # known, only filtered out by the other filters
    close = difflib.get_close_matches(wanted, list(spellings), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(spellings[c]) for c in close)}?" if close else ""
    raise InputError(f"no artist of the catalog has the {attribute[:-1]} {value!r}{hint}")


def _by_kind(artists: Sequence[Artist], kind: str | None, franchise: str | None, min_posts: int | None) -> list[Artist]:
    """The rows of one kind, franchise and post count (each filter only when given)."""
    if kind is not None and kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)} but is {kind!r}")
    if min_posts is not None and min_posts < 0:
        raise InputError(f"min_posts must be >= 0 but is {min_posts}")
    chosen = [a for a in artists if kind is None or a.kind == kind]
    if franchise:
        wanted = franchise.strip().casefold()
        chosen = [a for a in chosen if a.franchise.casefold() == wanted]
    if min_posts is not None:
        chosen = [a for a in chosen if a.post_count is not None and a.post_count >= min_posts]
    return chosen


def stratified_sample(artists: Sequence[Artist], n: int, seed: int = 0) -> list[Artist]:
    """``n`` artists stratified over the primary movement; deterministic for ``seed``."""
    ordered = sorted(artists, key=lambda a: a.artist_id)
    if n >= len(ordered):
        return ordered
    if n <= 0:
        return []
    strata: dict[str, list[Artist]] = {}
    for artist in ordered:
        strata.setdefault(artist.primary_movement, []).append(artist)
    keys = sorted(strata)
    total = len(ordered)
    quotas = {k: n * len(strata[k]) / total for k in keys}
    counts = {k: int(quotas[k]) for k in keys}
    if n >= len(keys):
        # every movement is represented at least once; taken from the largest strata
        for k in keys:
            if counts[k] == 0:
                counts[k] = 1
        while sum(counts.values()) > n:
            largest = max(keys, key=lambda k: (counts[k], k))
            counts[largest] -= 1
    remainder = n - sum(counts.values())
    order = sorted(keys, key=lambda k: (-(quotas[k] - int(quotas[k])), k))
    while remainder > 0:
        for k in order:
            if remainder == 0:
                break
            if counts[k] < len(strata[k]):
                counts[k] += 1
                remainder -= 1
    rng = random.Random(seed)
    picked: list[Artist] = []
    for k in keys:
        members = strata[k]
        picked.extend(rng.sample(members, min(counts[k], len(members))))
    return sorted(picked, key=lambda a: a.artist_id)
