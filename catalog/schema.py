"""Columns, patterns and text rules shared by catalog rows, their validation and exports.

Both ``catalog.model`` (loading, writing) and ``catalog.validate`` (checking) read these,
so neither imports the other at module level.
"""

from __future__ import annotations

from typing import Any

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
