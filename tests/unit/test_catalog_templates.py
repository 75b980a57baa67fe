"""Prompt templates: defaults, user files, and refusing bad placeholders with a clear message."""

from __future__ import annotations

import pytest

from catalog.templates import Template, TemplateError, get_templates, load_templates


def test_defaults():
    templates = load_templates()
    assert list(templates) == ["style", "portrait", "landscape", "art-by", "null",
                              "booru-artist", "booru-null", "character", "character-name"]
    assert templates["style"].render("Claude Monet") == "a painting in the style of Claude Monet"
    assert templates["art-by"].render("Hokusai") == "art by Hokusai"
    assert templates["null"].is_baseline and not templates["style"].is_baseline
    assert templates["null"].render() == "a painting"


def test_user_file_merges_over_defaults(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'sketch = "a pencil sketch by {name}"\n'
        '[style]\ntext = "an artwork in the style of {name}"\ndescription = "mine"\n'
        '[braces]\ntext = "{{literal}} by {name}"\n',
        encoding="utf-8",
    )
    templates = load_templates(path)
    assert templates["style"].render("X") == "an artwork in the style of X"
    assert templates["sketch"].render("X") == "a pencil sketch by X"
    assert templates["braces"].render("X") == "{literal} by X"
    assert "null" in templates and "portrait" in templates
    only = load_templates(path, merge=False)
    assert set(only) == {"sketch", "style", "braces"}


def test_replace_defaults_in_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('replace_defaults = true\nmine = "by {name}"\n', encoding="utf-8")
    assert list(load_templates(path)) == ["mine"]


@pytest.mark.parametrize(
    "body, message",
    [
        ('bad = "a painting by {artist}"', "template 'bad' in .*uses unknown placeholder {artist}"),
        ('bad = "a painting by {nmae}"', "did you mean {name}"),
        ('bad = "a painting by {0}"', "unknown placeholder {0}"),
        ('bad = "a painting by {name!r}"', "takes no format spec or conversion"),
        ('bad = "a painting by {name"', "template 'bad' .* is malformed"),
        ('bad = ""', "template 'bad' .* has an empty text"),
        ('"bad name" = "x {name}"', "template name 'bad name' .* must match"),
        ('[bad]\ntxt = "x {name}"', "unknown key"),
        ("bad = 3", "must be a string or a table"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_templates_are_refused(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body + "\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=message):
        load_templates(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(TemplateError, match="not found"):
        load_templates(tmp_path / "nope.toml")
    with pytest.raises(TemplateError, match="unknown template 'portriat'.*Did you mean 'portrait'"):
        get_templates(load_templates(), "style,portriat")


def test_template_object_checks_itself():
    with pytest.raises(TemplateError, match="unknown placeholder {who}"):
        Template(name="x", text="by {who}")
    with pytest.raises(TemplateError, match="needs an artist name"):
        Template(name="x", text="by {name}").render("")
