"""Recipes TOML files: read, validate with line numbers, resolve catalog ids, make catalog rows.

Reads a recipes file and the catalog it names ids of; writes nothing. The shape::

    [[recipe]]
    name = "Ember Knight"          # the character's name (and the trained token's)
    id = "ember-knight"            # optional: the slug of the name by default
    version = 1                    # required: a new version is a new prompt
    description = "a knight in red armor"
    franchise = ""                 # optional Danbooru copyright tag

    [[recipe.part]]
    id = "hatsune-miku"            # a catalog id (its name; form = "tag" for its Danbooru tag)
    weight = 1.2

    [[recipe.part]]
    text = "red armor"             # literal text ...
    to = 0.5                       # ... until half the steps (from/to: a fraction in [0, 1],
                                   #     or an integer step number, as A1111 reads them)
    [[recipe.part]]
    prompt = "(glowing eyes:1.1)"  # A1111 syntax, parsed
    [[recipe.part]]
    alternate = ["cat ears", { id = "felix-the-cat" }]   # one option per step

Parts are joined with ``separator`` (default ", "). Every problem of the file is reported
at once, as ``file:line: error [field]: message`` (the catalog validator's format), with a
did-you-mean for unknown keys and unknown catalog ids.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.recipes.grammar import parse, render
from catalog.recipes.parts import Alternation, Leaf, Node, normal_bound, normalize, scoped
from catalog.schema import ARTIST_ID_PATTERN, looks_like_formula
from catalog.validate import Problem
from evaluator.errors import InputError

RECIPE_KEYS = ("name", "id", "version", "description", "franchise", "separator", "part")
PART_KEYS = ("id", "text", "prompt", "alternate", "weight", "from", "to", "form")
CONTENT_KEYS = ("id", "text", "prompt")
FORMS = ("name", "tag")
RECIPE_SOURCE = "recipe"  # the catalog `sources` value of a recipe's row


class RecipeError(InputError):
    """A recipes file that cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class Recipe:
    """One recipe, its catalog ids resolved: ``parts`` are in normal form."""

    recipe_id: str
    name: str
    version: int
    parts: tuple[Node, ...]
    description: str = ""
    franchise: str = ""
    uses: tuple[str, ...] = ()  # the catalog ids it names, in order
    source: str = ""
    line: int = 0

    @property
    def prompt(self) -> str:
        """The canonical A1111 form (what A1111 reproduces from the PNG ``parameters``)."""
        return render(self.parts)


@dataclass
class RecipeReport:
    """Every problem of a recipes file and the recipes that passed."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    recipes: list[Recipe] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def error(self, line: int, message: str, field_name: str = "") -> None:
        self.problems.append(Problem("error", line, 0, message, field_name))

    def format(self) -> str:
        lines = [p.format(self.path) for p in sorted(self.problems, key=lambda p: p.line)]
        lines.append(f"{self.path}: {len(self.errors)} error(s), {len(self.recipes)} recipe(s)")
        return "\n".join(lines)


# ------------------------------------------------------------------ lines of the file

_HEADER = re.compile(r"^\s*\[\[\s*(recipe(?:\s*\.\s*part)?)\s*\]\]")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


@dataclass
class _Lines:
    """Line numbers of tables and keys: recipes[i]["" or key], parts[i][j]["" or key]."""

    recipes: list[dict[str, int]] = field(default_factory=list)
    parts: list[list[dict[str, int]]] = field(default_factory=list)

    def recipe(self, i: int, key: str = "") -> int:
        table = self.recipes[i] if i < len(self.recipes) else {}
        return table.get(key, table.get("", 0))

    def part(self, i: int, j: int, key: str = "") -> int:
        tables = self.parts[i] if i < len(self.parts) else []
        table = tables[j] if j < len(tables) else {}
        return table.get(key, table.get("", self.recipe(i)))


def _scan_lines(text: str) -> _Lines:
    found = _Lines()
    current: dict[str, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and header.group(1) == "recipe":
            current = {"": number}
            found.recipes.append(current)
            found.parts.append([])
        elif header and found.parts:
            current = {"": number}
            found.parts[-1].append(current)
        elif line.lstrip().startswith("["):
            current = None
        elif current is not None and (key := _KEY.match(line)):
            current.setdefault(key.group(1).strip("\"'"), number)
    return found


# ------------------------------------------------------------------ checks


def _suggest(value: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_keys(table: dict, known: Sequence[str], report: RecipeReport, line_of: Callable[[str], int],
                  what: str) -> None:
    for key in table:
        if key not in known:
            report.error(line_of(key), f"unknown {what} key {key!r}{_suggest(key, known)} "
                         f"(known: {', '.join(known)})", key)


def _bound(value: Any, key: str, line: int, report: RecipeReport) -> tuple:
    """A from/to value as a schedule bound; () for an open end (from = 0.0, to = 1.0)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        report.error(line, f"{key} must be a fraction in [0, 1] or a step number but is {value!r}", key)
        return ()
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            report.error(line, f"{key} = {value} is not a fraction in [0, 1] (write an integer for a step number)",
                         key)
            return ()
        if (key == "from" and value == 0.0) or (key == "to" and value == 1.0):
            return ()
    elif value < 0:
        report.error(line, f"{key} = {value} is not a step number (steps count from 0)", key)
        return ()
    return (normal_bound(value),)


def _schedule(part: dict, line_of: Callable[[str], int], report: RecipeReport) -> tuple[tuple, tuple]:
    after = _bound(part["from"], "from", line_of("from"), report) if "from" in part else ()
    until = _bound(part["to"], "to", line_of("to"), report) if "to" in part else ()
    if after and until and type(after[0]) is type(until[0]) and after[0] >= until[0]:
        report.error(line_of("from"), f"from {after[0]} is not before to {until[0]}: the part would never show",
                     "from")
    return after, until


def _weight(part: dict, line: int, report: RecipeReport) -> float:
    weight = part.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        report.error(line, f"weight must be a number but is {weight!r}", "weight")
        return 1.0
    return float(weight)


@dataclass
class _Context:
    """What checking one file needs: the report, the catalog by id, the ids a recipe uses."""

    report: RecipeReport
    catalog: dict[str, Any]  # artist_id -> catalog.model.Artist
    uses: list[str] = field(default_factory=list)


def _catalog_text(artist_id: Any, form: Any, line_of: Callable[[str], int], ctx: _Context) -> str | None:
    """The prompt text of a catalog row (its name, or its Danbooru tag), or None (reported)."""
    line = line_of("id")
    if not isinstance(artist_id, str) or not artist_id:
        ctx.report.error(line, f"id must be a catalog id (text) but is {artist_id!r}", "id")
        return None
    artist = ctx.catalog.get(artist_id)
    if artist is None:
        ctx.report.error(line, f"unknown catalog id {artist_id!r}{_suggest(artist_id, ctx.catalog)}", "id")
        return None
    line = line_of("form")
    if form not in FORMS:
        ctx.report.error(line, f"form must be one of {', '.join(FORMS)} but is {form!r}{_suggest(str(form), FORMS)}",
                         "form")
        return None
    ctx.uses.append(artist_id)
    if form == "tag":
        if not getattr(artist, "tag", ""):
            ctx.report.error(line, f"form = 'tag' but catalog row {artist_id!r} ({artist.name}) has no tag", "form")
            return None
        return artist.tag
    return artist.name


def _content(item: Any, line_of: Callable[[str], int], ctx: _Context) -> list[Node] | None:
    """The nodes of one part's content or one alternation option, or None (reported)."""
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict):
        ctx.report.error(line_of(""), f"an option must be text or a table with id, text or prompt but is {item!r}")
        return None
    given = [k for k in CONTENT_KEYS if k in item]
    if len(given) != 1:
        ctx.report.error(line_of(""), "a part has exactly one of id, text, prompt or alternate but has "
                         f"{', '.join(given) or 'none'}")
        return None
    key = given[0]
    value = item[key]
    if key == "id":
        text = _catalog_text(value, item.get("form", "name"), line_of, ctx)
        return None if text is None else [Leaf(text)]
    if not isinstance(value, str) or not value.strip():
        ctx.report.error(line_of(key), f"{key} must be non-empty text but is {value!r}", key)
        return None
    if key == "text":
        return [Leaf(value)]
    try:
        return list(parse(value, where=key))
    except InputError as exc:
        ctx.report.error(line_of(key), str(exc), key)
        return None


def _part(part: Any, i: int, j: int, lines: _Lines, ctx: _Context) -> list[Node] | None:
    """The nodes of part ``j`` of recipe ``i`` (weight and schedule applied), or None."""
    def line_of(key: str) -> int:
        return lines.part(i, j, key)

    if not isinstance(part, dict):
        ctx.report.error(line_of(""), f"a part must be a table ([[recipe.part]]) but is {part!r}")
        return None
    _unknown_keys(part, PART_KEYS, ctx.report, line_of, "part")
    if "form" in part and "id" not in part and "alternate" not in part:
        ctx.report.error(line_of("form"), "form applies to an id part only", "form")
    weight = _weight(part, line_of("weight"), ctx.report)
    after, until = _schedule(part, line_of, ctx.report)
    if "alternate" in part:
        nodes = _alternation(part, line_of, ctx)
    else:
        nodes = _content(part, line_of, ctx)
    return None if nodes is None else scoped(nodes, weight, after, until)


def _alternation(part: dict, line_of: Callable[[str], int], ctx: _Context) -> list[Node] | None:
    options = part["alternate"]
    if any(k in part for k in CONTENT_KEYS):
        ctx.report.error(line_of("alternate"), "a part has alternate or one of id/text/prompt, not both", "alternate")
        return None
    if not isinstance(options, list) or len(options) < 2:
        ctx.report.error(line_of("alternate"), f"alternate must list at least 2 options but is {options!r}",
                         "alternate")
        return None
    built = [_content(option, lambda key: line_of("alternate"), ctx) for option in options]
    if any(b is None for b in built):
        return None
    return [Alternation(tuple(normalize(b) for b in built))]


def _text_field(table: dict, key: str, line: int, report: RecipeReport, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        report.error(line, f"{key} must be text but is {value!r}", key)
        return ""
    if required and not value.strip():
        report.error(line, f"{key} is required (a non-empty text)", key)
    elif looks_like_formula(value.strip()):
        report.error(line, f"{key} {value[:40]!r} starts like a spreadsheet formula", key)
    return value.strip()


def _identity(table: dict, i: int, lines: _Lines, ctx: _Context, seen: dict[str, int]) -> tuple[str, str, int]:
    """(id, name, version) of recipe ``i``; problems reported."""
    from catalog.names import slugify

    report = ctx.report
    name = _text_field(table, "name", lines.recipe(i, "name"), report, required=True)
    line = lines.recipe(i, "id") if "id" in table else lines.recipe(i, "name")
    recipe_id = table.get("id", slugify(name) if name else "")
    if not isinstance(recipe_id, str) or not ARTIST_ID_PATTERN.match(recipe_id):
        report.error(line, f"id {recipe_id!r} is not a slug (lower-case a-z, 0-9 and single hyphens)", "id")
    elif recipe_id in seen:
        report.error(line, f"duplicate recipe id {recipe_id!r} (first on line {seen[recipe_id]})", "id")
    elif recipe_id in ctx.catalog:
        report.error(line, f"recipe id {recipe_id!r} is already a catalog id ({ctx.catalog[recipe_id].name}); "
                     "give the recipe its own id", "id")
    else:
        seen[recipe_id] = line
    version = table.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        report.error(lines.recipe(i, "version"), f"version must be an integer >= 1 but is {version!r}"
                     + (" (it is required: a new version is a new prompt)" if version is None else ""), "version")
        version = 0
    return recipe_id, name, version


def _recipe(table: Any, i: int, lines: _Lines, ctx: _Context, seen: dict[str, int], source: str) -> Recipe | None:
    report = ctx.report
    if not isinstance(table, dict):
        report.error(lines.recipe(i), "a recipe must be a table ([[recipe]])")
        return None
    before = len(report.errors)
    _unknown_keys(table, RECIPE_KEYS, report, lambda key: lines.recipe(i, key), "recipe")
    recipe_id, name, version = _identity(table, i, lines, ctx, seen)
    description = _text_field(table, "description", lines.recipe(i, "description"), report)
    franchise = _text_field(table, "franchise", lines.recipe(i, "franchise"), report)
    separator = table.get("separator", ", ")
    if not isinstance(separator, str):
        report.error(lines.recipe(i, "separator"), f"separator must be text but is {separator!r}", "separator")
        separator = ", "
    parts = table.get("part", [])
    if not isinstance(parts, list) or not parts:
        report.error(lines.recipe(i), f"recipe {name or recipe_id!r} has no parts (add [[recipe.part]] tables)",
                     "part")
        parts = []
    ctx.uses = []
    nodes: list[Node] = []
    for j, part in enumerate(parts):
        built = _part(part, i, j, lines, ctx)
        if built is not None:
            nodes.extend(([Leaf(separator)] if j else []) + built)
    if len(report.errors) > before:
        return None
    return Recipe(recipe_id, name, version, normalize(nodes), description, franchise, tuple(ctx.uses),
                  source, lines.recipe(i))


def _decode(data: bytes, report: RecipeReport) -> dict | None:
    """The TOML document, or None with its syntax error (and line) reported."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.error(data[: exc.start].count(b"\n") + 1, "invalid UTF-8; save the file as UTF-8")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        report.error(int(found.group(1)) if found else 0, f"not valid TOML: {exc}")
        return None


def validate_recipes_text(data: bytes, catalog: Sequence[Any], path: str = "<recipes>") -> RecipeReport:
    """Check recipes TOML bytes against a catalog (a list of ``Artist``); see the module doc."""
    report = RecipeReport(path=path)
    document = _decode(data, report)
    if document is None:
        return report
    lines = _scan_lines(data.decode("utf-8"))
    for key in document:
        if key != "recipe":
            report.error(0, f"unknown top-level key {key!r}{_suggest(key, ['recipe'])}; "
                         "a recipes file holds [[recipe]] tables", key)
    tables = document.get("recipe", [])
    if not isinstance(tables, list) or not tables:
        report.error(1, "no recipes: add a [[recipe]] table")
        return report
    ctx = _Context(report, {artist.artist_id: artist for artist in catalog})
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        recipe = _recipe(table, i, lines, ctx, seen, path)
        if recipe is not None:
            report.recipes.append(recipe)
    return report


def load_recipes(path: str | os.PathLike[str], catalog: Sequence[Any]) -> list[Recipe]:
    """The recipes of a file; raise ``RecipeError`` listing every problem."""
    source = Path(path)
    if not source.is_file():
        raise RecipeError(f"recipes file {source} not found")
    report = validate_recipes_text(source.read_bytes(), catalog, str(source))
    if report.errors:
        raise RecipeError(report.format())
    return report.recipes


def find_recipe(recipes: Sequence[Recipe], name: str) -> Recipe:
    """A recipe by id or name; an unknown one lists close matches."""
    for recipe in recipes:
        if name in (recipe.recipe_id, recipe.name):
            return recipe
    known = [r.recipe_id for r in recipes]
    raise InputError(f"no recipe {name!r}{_suggest(name, known)} (the file has {', '.join(known)})")


def recipe_entry(recipe: Recipe):
    """The catalog row of a recipe: a character whose ``name`` is its A1111 prompt.

    ``{name}`` in a template puts the recipe's prompt in; the recipe's own name is kept
    as the alias. ``sources = recipe``; the version and what it uses are in ``notes``.
    """
    from catalog.model import Artist

    uses = f"; uses {', '.join(dict.fromkeys(recipe.uses))}" if recipe.uses else ""
    about = f": {recipe.description}" if recipe.description else ""
    return Artist(
        artist_id=recipe.recipe_id, name=recipe.prompt, aliases=(recipe.name,), kind="character",
        franchise=recipe.franchise, sources=(RECIPE_SOURCE,),
        notes=f"recipe {recipe.recipe_id} v{recipe.version}{about}{uses}",
    )


def with_recipes(catalog: Sequence[Any], recipes_path: str | os.PathLike[str] | None) -> list[Any]:
    """The catalog with one row per recipe of ``recipes_path`` added (None: unchanged)."""
    if recipes_path is None:
        return list(catalog)
    return [*catalog, *(recipe_entry(r) for r in load_recipes(recipes_path, catalog))]
