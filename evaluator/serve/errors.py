"""API errors: a status, a message naming the bad parameter, and close names for it.

Reads and writes nothing. Every error the API answers is JSON
``{"error": message, "field": name or null, "suggestions": [...]}``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from evaluator.errors import InputError


class ApiError(InputError):
    """A request the API refuses, with the HTTP status and the field at fault."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400,
                 suggestions: list[str] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.suggestions = suggestions or []
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.message, "field": self.field, "suggestions": self.suggestions}


def suggest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close names of ``word`` among ``choices`` (difflib, as the CLI's did-you-mean)."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def check_name(field: str, value: str, choices: list[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else a 400 naming the field with close names."""
    if value in choices:
        return value
    close = suggest(value, choices)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    known = f" (known: {', '.join(choices) or 'none'})" if len(choices) <= 20 else ""
    raise ApiError(f"unknown {what} {value!r} in {field}{hint}{known}", field=field, suggestions=close)


def pick_name(field: str, value: str | None, choices: list[str], what: str) -> str:
    """The given name (checked), or the only choice when there is one; else a 400 asking for it."""
    if value:
        return check_name(field, value, choices, what)
    if len(choices) == 1:
        return choices[0]
    shown = ", ".join(choices[:20]) or "none in the store"
    raise ApiError(f"give {field}: the {what} to use (one of {shown})", field=field, suggestions=choices[:3])
