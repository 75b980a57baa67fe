"""Columns, patterns and text rules shared by catalog rows, their validation and exports.

Reads and writes nothing: constants and pure functions only. Both ``catalog.model``
(loading, writing) and ``catalog.validate`` (checking) import them, so validate never
needs model and the two cannot form an import circle.
"""

from __future__ import annotations

import re
from typing import Any

from catalog.units import LIST_SEPARATOR
from evaluator.errors import InputError

# Column order of styles.csv and of the `artists` table of the store.
COLUMNS: tuple[str, ...] = (
    "artist_id",
    "name",
    "aliases",
    "born",
    "died",
    "living",
    "nationality",
    "movements",
    "mediums",
    "tags",
    "recognized_sdxl",
    "recognized_sd1",
    "sources",
    "notes",
    # issue 15: what a row is, and its Danbooru tag (the booru prompt form)
    "kind",
    "tag",
    "post_count",
    "franchise",
    # Danbooru's other names for the tag (``jonathan_hamilton`` for ``tsuaii``): prompts and
    # labels written with an old or alternative tag still find the row
    "tag_aliases",
)
# Only these must be present: a hand-made catalog of ids and names is a valid catalog.
REQUIRED_COLUMNS: tuple[str, ...] = ("artist_id", "name")
# Multi-valued cells, joined with catalog.units.LIST_SEPARATOR.
LIST_COLUMNS: tuple[str, ...] = ("aliases", "movements", "mediums", "tags", "sources", "tag_aliases")
# Free-text columns besides the name: a formula start there is only a warning.
TEXT_COLUMNS: tuple[str, ...] = ("aliases", "nationality", "movements", "mediums", "tags", "notes", "tag", "franchise",
                                   "tag_aliases")
YEAR_COLUMNS: tuple[str, ...] = ("born", "died")
RECOGNITION_VALUES: tuple[str, ...] = ("yes", "no", "unsure")
RECOGNITION_COLUMNS: tuple[str, ...] = ("recognized_sdxl", "recognized_sd1")
# Lower-case ASCII words joined by single hyphens; an optional "-<year>" or "-<n>" suffix
# disambiguates two people with the same name.
ARTIST_ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# What a row is: a person whose style is prompted, or a fictional character (from Danbooru
# or a recipe). A blank cell is "artist": catalogs written before kinds existed held artists.
KINDS: tuple[str, ...] = ("artist", "character")
DEFAULT_KIND = "artist"
# A Danbooru tag: lower-case, no blanks and no commas (a comma separates tags in a prompt).
TAG_PATTERN = re.compile(r"^[^\sA-Z,]+$")

# Cells a spreadsheet would run as a formula when a CSV is opened: ``=HYPERLINK(...)``,
# ``+1``, ``-1``, ``@SUM``, and tab / carriage return, which some spreadsheets strip
# before parsing the rest (OWASP "CSV injection").
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def looks_like_formula(value: str) -> bool:
    """Would a spreadsheet run this cell? (a name, note or prompt starting with ``=`` ...)"""
    return value.startswith(FORMULA_PREFIXES)


def guard_formula(value: Any) -> Any:
    """A text cell safe to open in a spreadsheet: a leading apostrophe before a formula start."""
    return "'" + value if isinstance(value, str) and looks_like_formula(value) else value


def parse_kind(cell: str) -> str:
    """The ``kind`` cell: artist or character (case-insensitive); blank is artist."""
    value = cell.strip().lower()
    if not value:
        return DEFAULT_KIND
    if value not in KINDS:
        import difflib

        close = difflib.get_close_matches(value, KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"kind must be one of {', '.join(KINDS)} or blank but is {cell!r}{hint}")
    return value


def parse_post_count(cell: str) -> int | None:
    """The ``post_count`` cell: a non-negative integer (Danbooru's count), or blank."""
    value = cell.strip()
    if not value:
        return None
    if not value.isdigit():
        raise InputError(f"post_count must be a non-negative integer or blank but is {cell[:40]!r}")
    return int(value)


def split_list(cell: str) -> tuple[str, ...]:
    """Split a multi-valued cell; tolerant of ';' without the space (hand edits)."""
    if not cell or not cell.strip():
        return ()
    return tuple(part.strip() for part in cell.split(LIST_SEPARATOR.strip()) if part.strip())


def escape_tag(tag: str) -> str:
    """The tag as A1111 and ComfyUI read it: parentheses and brackets escaped (they mean attention).

    ``akira_(coffee_curry)`` -> ``akira_\\(coffee_curry\\)``; a backslash already in the tag
    is doubled first, so the prompt parser gives back the tag exactly.
    """
    out = tag.replace("\\", "\\\\")
    for bracket in "()[]":
        out = out.replace(bracket, "\\" + bracket)
    return out


def unescape_tag(text: str) -> str:
    """The inverse of ``escape_tag`` (``akira_\\(coffee_curry\\)`` -> ``akira_(coffee_curry)``)."""
    return re.sub(r"\\(.)", r"\1", text)


def tag_key(label: str) -> str:
    """How a label or prompt token is compared with tags: unescaped, trimmed, lower case,
    blanks as ``_`` (booru sites and prompts write ``ilya kuvshinov`` and ``ilya_kuvshinov``)."""
    return re.sub(r"\s+", "_", unescape_tag(label).strip().lower())


def parse_living(cell: str) -> bool | None:
    """The ``living`` cell: true/yes/1, false/no/0, or blank/"unknown" for not known."""
    value = cell.strip().lower()
    if value in ("", "unknown"):
        return None
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise InputError(f"living must be true, false or blank but is {cell!r}")
