"""The hostile import corpus (tests/corpus/hostile, issue 12): every file, one import.

Each committed file is one case (seeds past int64, a seed past 2**64, steps past int32,
a NUL in a chunk, ``../`` and absolute artist ids, a ``..`` checkpoint, broken iTXt,
Markdown and HTML in a prompt, a secret named .png, a 245-character name);
``expected.toml`` says what must happen to it. The folder is imported in one run: each
file gets its row with the expected outcome, nothing is written outside the workdir,
and a rerun changes nothing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import duckdb
from click.testing import CliRunner
from support.hardening import write_catalog

from evaluator.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "hostile"
NOT_CASES = {"make_hostile.py", "expected.toml"}


def _rows(wd: Path) -> dict[str, dict]:
    """Store rows by source file (``source_path``, else the error's leading file name)."""
    con = duckdb.connect(str(wd / "atelier.duckdb"), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM images")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    return {row.get("source_path") or row["error"].split(":", 1)[0]: row for row in rows}


def test_every_hostile_file_imports_or_fails_with_its_reason(tmp_path):
    expected = tomllib.loads((CORPUS / "expected.toml").read_text())
    cases = {p.name for p in CORPUS.iterdir() if p.is_file() and p.name not in NOT_CASES}
    assert cases == set(expected), f"every corpus file needs an expectation: {cases ^ set(expected)}"
    wd = tmp_path / "wd"
    before = {p for p in tmp_path.parent.rglob("*")}
    result = CliRunner().invoke(main, ["import", str(CORPUS), "-w", str(wd), "-q",
                                       "--catalog", str(write_catalog(tmp_path / "styles.csv"))])
    assert result.exit_code == 0, result.output
    created = {p for p in tmp_path.parent.rglob("*")} - before
    assert all(p == wd or p.is_relative_to(tmp_path) for p in created)
    assert not any(p.name == "escaped" for p in created)

    rows = _rows(wd)
    everything = repr(sorted(map(repr, rows.values())))
    for name, want in expected.items():
        row = rows[name]
        if want["outcome"] == "imported":
            assert row["error"] is None and row["path"] and (wd / row["path"]).is_file(), (name, row)
        else:
            assert row["path"] is None and want["error"] in row["error"], (name, row)
            assert f"failed: {name}: " in result.output
        for column in ("seed_text", "seed", "checkpoint", "artist_id", "prompt"):
            if column in want:
                assert row[column] == (want[column] or None), (name, column, row[column])
        if "note" in want:
            assert f"note: {name}: {want['note']}" in result.output
        if "never_stored" in want:
            assert want["never_stored"] not in everything and want["never_stored"] not in result.output
        if "max_name" in want:
            assert len(Path(row["path"]).name) <= want["max_name"]
    assert len(rows) == len(expected)

    rerun = CliRunner().invoke(main, ["import", str(CORPUS), "-w", str(wd), "-q",
                                      "--catalog", str(tmp_path / "styles.csv")])
    assert rerun.exit_code == 0 and f"0 imported, {len(expected)} already there" in rerun.output, rerun.output
    assert "0 rows written" in rerun.output and _rows(wd).keys() == rows.keys()
