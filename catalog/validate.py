"""Validate a catalog file, including one edited by hand: report every problem at once.

Reads the file's bytes (or bytes given); writes nothing: the ``ValidationReport`` holds
every problem and the rows that passed, which ``catalog.model.load_catalog`` turns into
artists.

Each problem carries a line (1-based, physical line of the file) and a column (1-based
field number in the CSV header; 0 when the problem concerns the whole line or file).

Errors make the catalog unusable (``atelier catalog validate`` exits 1); warnings are
printed but do not fail. Decisions worth knowing:

* A UTF-8 byte-order mark is accepted with a warning (Excel writes one).
* A name that starts with ``=``, ``+``, ``-``, ``@`` (spreadsheet formula injection, e.g.
  ``=HYPERLINK(...)``; ``catalog.schema.looks_like_formula`` after stripping the blanks
  around the name) is an **error**: no artist is called that, and a spreadsheet
  opening the file would run it. The same in other text columns is a warning.
* Recognition values are matched case-insensitively (``Yes`` is ``yes``).
* Columns other than ``artist_id`` and ``name`` are optional; unknown extra columns are
  kept with a warning.
* ``kind`` is ``artist`` or ``character`` (blank: artist). ``tag`` is a Danbooru tag
  (lower case, no blanks or commas) and names one row of each kind; ``post_count`` is
  a non-negative integer; ``franchise`` (a copyright tag) belongs to characters only.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from catalog.schema import (
    ARTIST_ID_PATTERN,
    COLUMNS,
    RECOGNITION_COLUMNS,
    RECOGNITION_VALUES,
    REQUIRED_COLUMNS,
    TAG_PATTERN,
    TEXT_COLUMNS,
    YEAR_COLUMNS,
    looks_like_formula,
    parse_kind,
    parse_living,
    parse_post_count,
    split_list,
)

# A cell larger than this is an error: names and notes are short, and a megabyte in one
# cell is a pasted file or an attack, which would bloat every table it is copied into.
MAX_FIELD_BYTES = 64 * 1024
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
    error_count: int = 0  # kept by error(): a row's checks compare it before and after

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
        self.error_count += 1
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
    if not data.strip():
        report.error(1, 0, "file is empty: expected a header line (artist_id,name,...) and rows")
        return report
    if data.startswith(b"\xef\xbb\xbf"):
        report.warning(1, 1, "file starts with a UTF-8 byte-order mark (accepted, ignored)")
        data = data[3:]
    text = _decode_lines(data, report)
    if _wrong_delimiter(text.split("\n", 1)[0].rstrip("\r"), report):
        return report
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        report.error(1, 0, f"cannot read the header line: {exc}")
        return report
    report.columns = header
    position = _check_header(header, report)
    missing = [c for c in REQUIRED_COLUMNS if c not in position]
    checker = _RowChecker(report, position, now_year or _dt.date.today().year)
    checker.may_have_nul = "\x00" in text
    rows = _check_rows(reader, header, checker, keep=not missing)
    if rows == 0 and not missing:
        report.error(1, 0, "no artist rows: the file has a header only")
    return report


def _wrong_delimiter(header_line: str, report: ValidationReport) -> bool:
    """Report a header split by ``;``, tabs or pipes (a spreadsheet's export setting)."""
    if "," in header_line:
        return False
    for delimiter, label in OTHER_DELIMITERS.items():
        if delimiter in header_line:
            report.error(
                1,
                header_line.index(delimiter) + 1,
                f"wrong delimiter: the header is separated by {label}s ({delimiter!r}); "
                "catalog files are comma-separated",
            )
            return True
    return False


def _check_header(header: list[str], report: ValidationReport) -> dict[str, int]:
    """Report duplicate, empty, unknown and missing columns; return column -> position."""
    position: dict[str, int] = {}
    for index, name in enumerate(header, start=1):
        if name in position:
            report.error(1, index, f"duplicate column {name!r} (also column {position[name]})")
        position.setdefault(name, index)
        if name and name not in COLUMNS:
            report.warning(1, index, f"extra column {name!r} is not a catalog column (kept)")
        if not name:
            report.error(1, index, "empty column name in the header")
    for name in REQUIRED_COLUMNS:
        if name not in position:
            report.error(1, 0, f"missing required column {name!r}")
    return position


def _check_rows(reader, header: list[str], checker: _RowChecker, keep: bool) -> int:
    """Check every non-blank row; keep the good ones when ``keep``; return the row count."""
    report = checker.report
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
        if not checker.check(row, line) and keep:
            report.rows.append((line, row))
    return rows


class _RowChecker:
    """The checks of one row, each short; ``check`` runs them in the order they report."""

    def __init__(self, report: ValidationReport, position: dict[str, int], year_now: int) -> None:
        self.report = report
        self.position = position
        self.year_now = year_now
        self.ids_seen: dict[str, int] = {}  # artist_id -> first line
        self.tags_seen: dict[tuple[str, str], int] = {}  # (kind, tag) -> first line
        self.line = 0
        self.may_have_nul = True  # validate_text clears it for a file without NUL characters

    def check(self, row: dict[str, str], line: int) -> bool:
        """Check one row; return True when it has an error."""
        self.line = line
        before = self.report.error_count
        self._cells(row)
        self._artist_id(row.get("artist_id", "").strip())
        self._name(row.get("name", ""))
        self._text_columns(row)
        # blank cells are valid: most rows (Danbooru's) leave these empty, so skip the checks
        years = self._years(row) if row.get("born") or row.get("died") else {}
        if row.get("living"):
            self._living(row["living"], years)
        if row.get("recognized_sdxl") or row.get("recognized_sd1"):
            self._recognition(row)
        self._kind_and_tag(row)
        return self.report.error_count > before

    def _error(self, column: str, message: str) -> None:
        self.report.error(self.line, self.position.get(column, 0), message, column)

    def _warning(self, column: str, message: str) -> None:
        self.report.warning(self.line, self.position.get(column, 0), message, column)

    def _cells(self, row: dict[str, str]) -> None:
        # (a U+FFFD from a bad byte was already reported as invalid UTF-8 on its line)
        if not self.may_have_nul and max(map(len, row.values()), default=0) * 4 <= MAX_FIELD_BYTES:
            return  # the common row: no cell can be over the limit (UTF-8: <= 4 bytes a character)
        for name, value in row.items():
            # UTF-8 takes at most 4 bytes a character: only a long cell needs encoding
            size = len(value.encode("utf-8")) if len(value) * 4 > MAX_FIELD_BYTES else 0
            if size > MAX_FIELD_BYTES:
                self._error(name, f"field is {size} bytes, over the limit of {MAX_FIELD_BYTES}")
            if "\x00" in value:
                self._error(name, "field contains a NUL character")

    def _artist_id(self, artist_id: str) -> None:
        if "artist_id" not in self.position:
            return
        if not artist_id:
            self._error("artist_id", "empty artist_id")
        elif not ARTIST_ID_PATTERN.match(artist_id):
            self._error(
                "artist_id",
                f"artist_id {artist_id[:60]!r} is not a slug (lower-case a-z, 0-9 and single hyphens)",
            )
        elif artist_id in self.ids_seen:
            self._error(
                "artist_id",
                f"duplicate artist_id {artist_id!r} (first on line {self.ids_seen[artist_id]})",
            )
        else:
            self.ids_seen[artist_id] = self.line

    def _name(self, name: str) -> None:
        # .strip() first: a name with a leading tab or CR is judged by what follows it
        if "name" not in self.position:
            return
        if not name.strip():
            self._error("name", "empty name")
        elif looks_like_formula(name.strip()):
            self._error("name", f"name {name[:40]!r} looks like a spreadsheet formula (formula injection)")
        elif unicodedata.normalize("NFC", name) != name:
            self._warning("name", "name is not Unicode NFC (it is normalized on load)")

    def _text_columns(self, row: dict[str, str]) -> None:
        for column in TEXT_COLUMNS:
            value = row.get(column)
            if not value:
                continue
            value = value.strip()
            if looks_like_formula(value) and column in self.position:
                self._warning(column, f"{column} starts with {value[0]!r} (spreadsheet formula?)")

    def _years(self, row: dict[str, str]) -> dict[str, int]:
        """The valid born/died years of the row (bad or future ones are reported)."""
        years: dict[str, int] = {}
        for column in YEAR_COLUMNS:
            value = row.get(column, "").strip()
            if not value:
                continue
            try:
                year = int(value)
            except ValueError:
                self._error(column, f"{column} must be a year or blank but is {value[:40]!r}")
                continue
            if year > self.year_now:
                self._error(column, f"{column} {year} is in the future")
            years[column] = year
        if "born" in years and "died" in years and years["died"] < years["born"]:
            self._error("died", f"died {years['died']} is before born {years['born']}")
        return years

    def _living(self, cell: str, years: dict[str, int]) -> None:
        try:
            living = parse_living(cell)
        except ValueError as exc:
            self._error("living", str(exc))
            return
        if living is True and "died" in years:
            self._error("living", f"living is true but died is {years['died']}")

    def _recognition(self, row: dict[str, str]) -> None:
        for column in RECOGNITION_COLUMNS:
            value = row.get(column, "").strip()
            if value and value.lower() not in RECOGNITION_VALUES:
                self._error(
                    column,
                    f"unknown recognition value {value[:40]!r}; expected yes, no, unsure or blank",
                )


    def _kind_and_tag(self, row: dict[str, str]) -> None:
        """kind, tag, post_count and franchise (the Danbooru columns, issue 15)."""
        try:
            kind = parse_kind(row.get("kind", ""))
        except ValueError as exc:
            self._error("kind", str(exc))
            kind = ""
        try:
            parse_post_count(row.get("post_count", ""))
        except ValueError as exc:
            self._error("post_count", str(exc))
        tag = row.get("tag", "").strip()
        if tag and not TAG_PATTERN.match(tag):
            self._error("tag", f"tag {tag[:60]!r} is not a Danbooru tag (lower case, '_' for spaces, no commas)")
        elif tag and kind:
            first = self.tags_seen.setdefault((kind, tag), self.line)
            if first != self.line:
                self._error("tag", f"duplicate {kind} tag {tag!r} (first on line {first})")
        self._tag_aliases(row.get("tag_aliases", ""), tag)
        franchise = row.get("franchise", "").strip()
        if franchise and kind == "artist":
            self._error("franchise", f"franchise {franchise[:40]!r} is for characters, but this row is an artist")
        elif franchise and not TAG_PATTERN.match(franchise):
            self._error("franchise", f"franchise {franchise[:60]!r} is not a Danbooru copyright tag")


    def _tag_aliases(self, cell: str, tag: str) -> None:
        """Danbooru's aliases of the row's tag: tags themselves, and only beside a tag."""
        aliases = split_list(cell or "")
        if aliases and not tag:
            self._error("tag_aliases", "tag_aliases are given but the row has no tag")
        for alias in aliases:
            if not TAG_PATTERN.match(alias):
                self._error("tag_aliases", f"alias {alias[:60]!r} is not a Danbooru tag (lower case, no commas)")


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
