"""Validate a catalog file, including one edited by hand: report every problem at once.

Each problem carries a line (1-based, physical line of the file) and a column (1-based
field number in the CSV header; 0 when the problem concerns the whole line or file).

Errors make the catalog unusable (``atelier catalog validate`` exits 1); warnings are
printed but do not fail. Decisions worth knowing:

* A UTF-8 byte-order mark is accepted with a warning (Excel writes one).
* A name that starts with ``=``, ``+``, ``-``, ``@`` (spreadsheet formula injection, e.g.
  ``=HYPERLINK(...)``) is an **error**: no artist is called that, and a spreadsheet
  opening the file would run it. The same in other text columns is a warning.
* Recognition values are matched case-insensitively (``Yes`` is ``yes``).
* Columns other than ``artist_id`` and ``name`` are optional; unknown extra columns are
  kept with a warning.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from catalog.model import (
    ARTIST_ID_PATTERN,
    COLUMNS,
    RECOGNITION_COLUMNS,
    RECOGNITION_VALUES,
    REQUIRED_COLUMNS,
    parse_living,
)

# A cell larger than this is an error: names and notes are short, and a megabyte in one
# cell is a pasted file or an attack, which would bloat every table it is copied into.
MAX_FIELD_BYTES = 64 * 1024
FORMULA_PREFIXES = ("=", "+", "-", "@")
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


@dataclass(frozen=True, slots=True)
class Problem:
    severity: str  # "error" or "warning"
    line: int
    column: int
    message: str
    field: str = ""

    def format(self, path: str = "") -> str:
        where = f"{path}:" if path else ""
        col = f"{self.column}:" if self.column else ""
        column_name = f" [{self.field}]" if self.field else ""
        return f"{where}{self.line}:{col} {self.severity}{column_name}: {self.message}"


@dataclass
class ValidationReport:
    path: str
    problems: list[Problem] = field(default_factory=list)
    # (line number, cells by column name) of every row that could be parsed.
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, line: int, column: int, message: str, field_name: str = "") -> None:
        self.problems.append(Problem("error", line, column, message, field_name))

    def warning(self, line: int, column: int, message: str, field_name: str = "") -> None:
        self.problems.append(Problem("warning", line, column, message, field_name))

    def format(self, only_errors: bool = False) -> str:
        chosen = self.errors if only_errors else self.problems
        lines = [p.format(self.path) for p in sorted(chosen, key=lambda p: (p.line, p.column))]
        summary = (
            f"{self.path}: {len(self.errors)} error(s), {len(self.warnings)} warning(s), "
            f"{len(self.rows)} row(s)"
        )
        return "\n".join([*lines, summary])


def _decode_lines(data: bytes, report: ValidationReport) -> str:
    """Decode UTF-8 line by line so every bad byte is reported with its line and column."""
    out: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
            report.error(
                number,
                column,
                f"invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            )
            out.append(raw.decode("utf-8", errors="replace"))
    return "\n".join(out)


def validate_text(data: bytes, path: str = "<catalog>", now_year: int | None = None) -> ValidationReport:
    """Validate catalog bytes; see the module docstring for the rules."""
    report = ValidationReport(path=path)
    year_now = now_year or _dt.date.today().year
    if not data.strip():
        report.error(1, 0, "file is empty: expected a header line (artist_id,name,...) and rows")
        return report
    if data.startswith(b"\xef\xbb\xbf"):
        report.warning(1, 1, "file starts with a UTF-8 byte-order mark (accepted, ignored)")
        data = data[3:]
    text = _decode_lines(data, report)
    header_line = text.split("\n", 1)[0].rstrip("\r")
    if "," not in header_line:
        for delimiter, label in OTHER_DELIMITERS.items():
            if delimiter in header_line:
                report.error(
                    1,
                    header_line.index(delimiter) + 1,
                    f"wrong delimiter: the header is separated by {label}s ({delimiter!r}); "
                    "catalog files are comma-separated",
                )
                return report
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        report.error(1, 0, f"cannot read the header line: {exc}")
        return report
    header = [h.strip() for h in header]
    report.columns = header
    seen_columns: dict[str, int] = {}
    for index, name in enumerate(header, start=1):
        if name in seen_columns:
            report.error(1, index, f"duplicate column {name!r} (also column {seen_columns[name]})")
        seen_columns.setdefault(name, index)
        if name and name not in COLUMNS:
            report.warning(1, index, f"extra column {name!r} is not a catalog column (kept)")
        if not name:
            report.error(1, index, "empty column name in the header")
    missing = [c for c in REQUIRED_COLUMNS if c not in seen_columns]
    for name in missing:
        report.error(1, 0, f"missing required column {name!r}")
    position = {name: index for name, index in seen_columns.items()}

    ids_seen: dict[str, int] = {}
    previous_end = reader.line_num
    rows = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.error(reader.line_num, 0, f"malformed CSV: {exc}")
            previous_end = reader.line_num
            continue
        line = previous_end + 1
        previous_end = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue  # blank line
        rows += 1
        if len(cells) != len(header):
            report.error(
                line,
                min(len(cells), len(header)) + 1,
                f"row has {len(cells)} fields but the header has {len(header)}",
            )
        row = {name: (cells[i] if i < len(cells) else "") for i, name in enumerate(header)}
        bad = _check_row(row, line, position, report, ids_seen, year_now)
        if not missing and not bad:
            report.rows.append((line, row))
    if rows == 0 and not missing:
        report.error(1, 0, "no artist rows: the file has a header only")
    return report


def _check_row(
    row: dict[str, str],
    line: int,
    position: dict[str, int],
    report: ValidationReport,
    ids_seen: dict[str, int],
    year_now: int,
) -> bool:
    """Check one row; return True when it has an error."""
    before = len(report.errors)

    def col(name: str) -> int:
        return position.get(name, 0)

    for name, value in row.items():
        size = len(value.encode("utf-8"))
        if size > MAX_FIELD_BYTES:
            report.error(
                line, col(name), f"field is {size} bytes, over the limit of {MAX_FIELD_BYTES}", name
            )
        if "\x00" in value:
            report.error(line, col(name), "field contains a NUL character", name)
        if "\ufffd" in value and name in COLUMNS:
            pass  # already reported as invalid UTF-8 on its line

    artist_id = row.get("artist_id", "").strip()
    if "artist_id" in position:
        if not artist_id:
            report.error(line, col("artist_id"), "empty artist_id", "artist_id")
        elif not ARTIST_ID_PATTERN.match(artist_id):
            report.error(
                line,
                col("artist_id"),
                f"artist_id {artist_id[:60]!r} is not a slug (lower-case a-z, 0-9 and single hyphens)",
                "artist_id",
            )
        elif artist_id in ids_seen:
            report.error(
                line,
                col("artist_id"),
                f"duplicate artist_id {artist_id!r} (first on line {ids_seen[artist_id]})",
                "artist_id",
            )
        else:
            ids_seen[artist_id] = line

    name = row.get("name", "")
    if "name" in position:
        if not name.strip():
            report.error(line, col("name"), "empty name", "name")
        elif name.strip().startswith(FORMULA_PREFIXES):
            report.error(
                line,
                col("name"),
                f"name {name[:40]!r} looks like a spreadsheet formula (formula injection)",
                "name",
            )
        elif unicodedata.normalize("NFC", name) != name:
            report.warning(line, col("name"), "name is not Unicode NFC (it is normalized on load)", "name")
    for other in ("aliases", "nationality", "movements", "mediums", "tags", "notes"):
        value = row.get(other, "").strip()
        if value.startswith(FORMULA_PREFIXES) and other in position:
            report.warning(line, col(other), f"{other} starts with {value[0]!r} (spreadsheet formula?)", other)

    years: dict[str, int] = {}
    for which in ("born", "died"):
        value = row.get(which, "").strip()
        if not value:
            continue
        try:
            year = int(value)
        except ValueError:
            report.error(line, col(which), f"{which} must be a year or blank but is {value[:40]!r}", which)
            continue
        if year > year_now:
            report.error(line, col(which), f"{which} {year} is in the future", which)
        years[which] = year
    if "born" in years and "died" in years and years["died"] < years["born"]:
        report.error(
            line, col("died"), f"died {years['died']} is before born {years['born']}", "died"
        )
    living_cell = row.get("living", "")
    try:
        living = parse_living(living_cell)
    except ValueError as exc:
        report.error(line, col("living"), str(exc), "living")
        living = None
    if living is True and "died" in years:
        report.error(line, col("living"), f"living is true but died is {years['died']}", "living")

    for which in RECOGNITION_COLUMNS:
        value = row.get(which, "").strip()
        if value and value.lower() not in RECOGNITION_VALUES:
            report.error(
                line,
                col(which),
                f"unknown recognition value {value[:40]!r}; expected yes, no, unsure or blank",
                which,
            )
    return len(report.errors) > before


def validate_catalog(path: str | os.PathLike[str], now_year: int | None = None) -> ValidationReport:
    """Validate the catalog file at ``path``."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        report = ValidationReport(path=str(path))
        report.error(0, 0, "file not found")
        return report
    return validate_text(data, path=str(path), now_year=now_year)
