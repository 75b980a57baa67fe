"""Every catalog file of the corpus gives exactly its expected problems, with lines and columns."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog.model import CatalogError, load_catalog
from catalog.validate import MAX_FIELD_BYTES, validate_catalog, validate_text
from evaluator.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "catalogs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))["case"]


def test_corpus_lists_every_file():
    listed = {case["file"] for case in CASES}
    present = {p.name for p in CORPUS.iterdir() if p.suffix == ".csv"}
    assert listed == present


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_corpus_case(case):
    report = validate_catalog(CORPUS / case["file"])
    got = {(p.severity, p.line, p.column) for p in report.problems}
    want = {(s, line, col) for s, line, col, _ in case["problems"]}
    assert got == want, report.format()
    for severity, line, column, text in case["problems"]:
        messages = [p.message for p in report.problems if (p.severity, p.line, p.column) == (severity, line, column)]
        assert any(text in m for m in messages), (text, messages)
    assert report.ok is case["valid"]


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_corpus_case_cli_exit_code(case):
    result = CliRunner().invoke(main, ["catalog", "validate", str(CORPUS / case["file"])])
    assert result.exit_code == (0 if case["valid"] else 1), result.output
    for _, line, _, _ in case["problems"]:
        assert f"{case['file']}:{line}:" in result.output


def test_load_catalog_raises_with_every_error():
    with pytest.raises(CatalogError) as info:
        load_catalog(CORPUS / "many_errors.csv")
    text = str(info.value)
    assert "many_errors.csv:3:1:" in text and "many_errors.csv:4:3:" in text
    assert text.count("error") >= 7


def test_load_catalog_accepts_warnings_and_normalizes():
    artists = load_catalog(CORPUS / "not_nfc.csv")
    assert artists[0].name == "Ren\u00e9 Magritte"
    artists = load_catalog(CORPUS / "ok_crlf_blank_lines.csv")
    assert [a.recognized_sdxl for a in artists] == ["yes", "no"]
    extra = load_catalog(CORPUS / "extra_column.csv")[0]
    assert extra.to_row()["favourite_colour"] == "blue"


def test_megabyte_field_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("artist_id,name,notes\nok,Ok,short\nbig,Big," + "x" * 1_000_000 + "\n", encoding="utf-8")
    report = validate_catalog(path)
    assert [(p.line, p.column, p.field) for p in report.errors] == [(3, 3, "notes")]
    assert f"over the limit of {MAX_FIELD_BYTES}" in report.errors[0].message


def test_missing_file_is_reported():
    report = validate_catalog("/nonexistent/styles.csv")
    assert not report.ok and "not found" in report.format()


def test_year_in_the_future_uses_the_given_year():
    data = b"artist_id,name,died\nx,X,2030\n"
    assert validate_text(data, now_year=2031).ok
    assert not validate_text(data, now_year=2029).ok
