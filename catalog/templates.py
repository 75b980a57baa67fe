"""Prompt templates: named prompts with a ``{name}`` or ``{tag}`` placeholder for the row.

Reads the packaged ``catalog/data/templates.toml`` and an optional user TOML file;
writes nothing. The packaged file holds ``style``, ``portrait``, ``landscape``,
``art-by`` and ``null``. A user file has the same shape::

    [my-template]
    text = "a still life of fruit by {name}"
    description = "optional"

    # or the short form
    sketch = "a pencil sketch by {name}"

``load_templates(path)`` merges the user's templates over the defaults (same name: the
user's wins). With ``replace_defaults = true`` at the top of the file, or
``merge=False``, only the user's templates are used. Two placeholders exist: ``{name}``,
the row's natural name ("Ilya Kuvshinov"), and ``{tag}``, its Danbooru tag in the form
A1111 and ComfyUI read (parentheses escaped: ``akira_\\(coffee_curry\\)``), for the anime
fine-tunes prompted with tags. Any other (``{artist}``, ``{0}``, ``{name!r}``) is refused
with the template's name. A template needing ``{tag}`` refuses a row without one,
naming the row. A template without either is a *baseline*: the plan makes one unit per
checkpoint and seed for it, with ``artist_id = catalog.units.BASELINE_ARTIST_ID``.

``kinds`` (optional, default ``["artist"]``) says which catalog rows a template is for:
the plan pairs ``character`` templates with characters and artist templates with
artists, so one plan can hold both.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from catalog.schema import KINDS, escape_tag
from evaluator.errors import InputError

PLACEHOLDERS = ("name", "tag")
# Kinds a template is for when its file does not say: catalogs held only artists before.
DEFAULT_TEMPLATE_KINDS = ("artist",)
# Template names end up in file paths (images/<ckpt>/<artist>/<template>-<seed>-...).
# No leading dot: template names become file-name parts.
TEMPLATE_NAME_PATTERN = re.compile(r"^(?!\.)[A-Za-z0-9._-]+$")
DEFAULT_TEMPLATES_PATH = Path(__file__).resolve().parent / "data" / "templates.toml"


class TemplateError(InputError):
    """A template file or template that cannot be used."""


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    text: str
    description: str = ""
    source: str = ""
    kinds: tuple[str, ...] = DEFAULT_TEMPLATE_KINDS

    def __post_init__(self) -> None:
        check_template(self.name, self.text, self.source)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise TemplateError(f"template {self.name!r}: kinds must be a non-empty list of "
                                f"{', '.join(KINDS)} but is {list(self.kinds)}")

    @property
    def is_baseline(self) -> bool:
        """True when the prompt names no artist (the `null` template and the like)."""
        return not _fields(self.name, self.text, self.source)

    @property
    def needs_tag(self) -> bool:
        """True when the prompt takes the row's Danbooru tag (a booru template)."""
        return "tag" in _fields(self.name, self.text, self.source)

    def render(self, name: str = "", tag: str = "") -> str:
        """The prompt for one row: ``name`` its natural name, ``tag`` its raw Danbooru tag
        (escaped here); a baseline template ignores both."""
        fields = _fields(self.name, self.text, self.source)
        if "name" in fields and not name.strip():
            raise TemplateError(f"template {self.name!r} needs an artist name but got {name!r}")
        if "tag" in fields and not tag.strip():
            raise TemplateError(f"template {self.name!r} needs a Danbooru tag but got {tag!r}")
        return self.text.format(name=name, tag=escape_tag(tag))

    def render_row(self, row) -> str:
        """The prompt for a catalog row (``catalog.model.Artist``); a row without the tag
        this template needs is refused by id and name.

        Prompts are A1111 syntax (the runner reads them so), so the name is escaped like the
        tag: "Qan[t]" and "Akira (coffee curry)" are text, not attention; the runner passes a
        prompt whose only syntax is escapes to the model as its literal text. A recipe row's
        name is its A1111 prompt (``catalog.recipes``) and goes in as it is.
        """
        from catalog.recipes.file import RECIPE_SOURCE

        if self.needs_tag and not row.tag:
            raise TemplateError(
                f"template {self.name!r} needs {{tag}} but catalog row {row.artist_id!r} ({row.name}) has no "
                "Danbooru tag; select rows with one (--min-posts 0) or use a {name} template")
        return self.render(row.name if RECIPE_SOURCE in row.sources else escape_tag(row.name), row.tag)


def _fields(template_name: str, text: str, source: str) -> list[str]:
    where = f" in {source}" if source else ""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(
            f"template {template_name!r}{where} is malformed: {exc} "
            "(write literal braces as {{ and }})"
        ) from None
    found = []
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS:
            shown = "{" + field_name + "}"
            hint = difflib.get_close_matches(field_name, PLACEHOLDERS, n=1)
            suggestion = f"; did you mean {{{hint[0]}}}?" if hint else ""
            raise TemplateError(
                f"template {template_name!r}{where} uses unknown placeholder {shown}; "
                f"the placeholders are {{name}} and {{tag}}{suggestion}"
            )
        if spec or conversion:
            raise TemplateError(
                f"template {template_name!r}{where}: placeholder {{{field_name}}} takes no format "
                "spec or conversion"
            )
        found.append(field_name)
    return found


def check_template(name: str, text: str, source: str = "") -> None:
    """Raise TemplateError if ``name`` or ``text`` is unusable."""
    where = f" in {source}" if source else ""
    if not TEMPLATE_NAME_PATTERN.match(name or ""):
        raise TemplateError(
            f"template name {name!r}{where} must match [A-Za-z0-9._-]+ (it is used in file paths)"
        )
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(f"template {name!r}{where} has an empty text")
    _fields(name, text, source)


def _parse_file(path: Path) -> tuple[dict[str, Template], bool]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"template file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template file {path} is not valid TOML: {exc}") from None
    replace = data.pop("replace_defaults", False)
    if not isinstance(replace, bool):
        raise TemplateError(f"{path}: replace_defaults must be true or false")
    templates: dict[str, Template] = {}
    for name, value in data.items():
        kinds: list[str] = list(DEFAULT_TEMPLATE_KINDS)
        if isinstance(value, str):
            text, description = value, ""
        elif isinstance(value, dict):
            unknown = sorted(set(value) - {"text", "description", "kinds"})
            if unknown:
                raise TemplateError(
                    f"template {name!r} in {path} has unknown key(s) {unknown}; "
                    "allowed: text, description, kinds"
                )
            if "text" not in value:
                raise TemplateError(f"template {name!r} in {path} has no `text`")
            text, description = value["text"], str(value.get("description", ""))
            kinds = value.get("kinds", list(DEFAULT_TEMPLATE_KINDS))
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                raise TemplateError(f"template {name!r} in {path}: kinds must be a list such as [\"character\"]")
        else:
            raise TemplateError(
                f"template {name!r} in {path} must be a string or a table with `text`"
            )
        templates[name] = Template(name=name, text=text, description=description, source=str(path),
                                   kinds=tuple(kinds))
    return templates, replace


def load_templates(
    path: str | os.PathLike[str] | None = None, merge: bool = True
) -> dict[str, Template]:
    """Templates by name: the packaged defaults, with the user's file merged over them."""
    defaults, _ = _parse_file(DEFAULT_TEMPLATES_PATH)
    if path is None:
        return defaults
    user, replace = _parse_file(Path(path))
    if not user:
        raise TemplateError(f"template file {path} defines no templates")
    if replace or not merge:
        return user
    return {**defaults, **user}


def get_templates(templates: dict[str, Template], names: list[str] | str) -> list[Template]:
    """Look templates up by name; an unknown name lists the known ones and a close match."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    chosen = []
    for name in names:
        if name not in templates:
            close = difflib.get_close_matches(name, list(templates), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TemplateError(
                f"unknown template {name!r}; known templates: {', '.join(sorted(templates))}.{hint}"
            )
        chosen.append(templates[name])
    if len(set(names)) != len(names):
        raise TemplateError(f"template names repeat: {names}")
    return chosen
