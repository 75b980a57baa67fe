"""Reading the builder's source lists into records, each line kept or dropped with a reason.

Reads the files of ``shared/data/artist-sources`` (names in ``rules.SOURCE_FILES``): the
SDXL style-studies sheet (CSV), the SD 1.5 cheat sheet and its exclusions (JSON arrays),
the clip-interrogator artists, movements and mediums (text, one per line) and WikiArt's
artist styles (CSV). Writes nothing; drops and counts go into the ``BuildReport``.
A missing, non-UTF-8 or malformed file raises ``SourceError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path

from catalog.build.records import BuildReport, Dropped, Record
from catalog.build.rules import (
    COUNTRY_NAMES,
    EXCLUSION_CODES,
    EXTRA_MOVEMENTS,
    GENERIC_WORDS,
    LIVING_IF_BORN_AFTER,
    MEDIUM_WORDS,
    MEDIUMS_FILE,
    MOVEMENT_ALIASES,
    MOVEMENTS_FILE,
    NON_ARTISTS,
    NOT_MEDIUMS,
    PRIORITY,
    SOURCE_FILES,
    SOURCES,
)
from catalog.names import (
    PARTICLES,
    NameLink,
    clean_text,
    expand_name,
    fix_mojibake,
    invert_name,
    is_placeholder,
    name_key,
)
from evaluator.errors import InputError

# A cheat-sheet category that dates the artist ("19th century"): kept as a tag, listed last.
_CENTURY = re.compile(r"^\d{1,2}(st|nd|rd|th) century$")


class SourceError(InputError):
    """A source file that is missing or unreadable (named with its line)."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"source file {path} not found") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"source file {path} is not UTF-8: {exc}") from None


def _non_artist_reason(name: str) -> str | None:
    if is_placeholder(name):
        return "empty or placeholder name"
    key = name_key(name)
    if not key:
        return "no letters or digits in the name"
    if key in NON_ARTISTS:
        return NON_ARTISTS[key]
    if all(token in GENERIC_WORDS for token in key.split()):
        return "a job title or generic word, not a name"
    return None


def _year(text: str | None) -> int | None:
    text = clean_text(str(text or ""))
    return int(text) if re.fullmatch(r"\d{3,4}", text) else None


def _split_tags(text: str) -> list[str]:
    return [t for t in (clean_text(x).lower() for x in (text or "").split(",")) if t and not is_placeholder(t)]


class Vocabulary:
    """Movement and medium words, from the clip-interrogator lists plus the sources' forms."""

    def __init__(self, movements: Iterable[str], mediums: Iterable[str]) -> None:
        names = {clean_text(m).lower() for m in movements if clean_text(m)} | EXTRA_MOVEMENTS
        # "post impressionism", "post-impressionism" and "Post_Impressionism" are one
        self.movements = {self._fold(m): m for m in sorted(names)}
        self.mediums = dict(MEDIUM_WORDS)
        for phrase in mediums:
            words = re.sub(r"^(a|an)\s+", "", clean_text(phrase).lower())
            if words and words not in NOT_MEDIUMS and not words.endswith(" of"):
                self.mediums.setdefault(words, words)

    @staticmethod
    def _fold(term: str) -> str:
        return re.sub(r"[\s_-]+", " ", clean_text(term).lower())

    def movement(self, term: str) -> str | None:
        term = self._fold(term)
        term = self._fold(MOVEMENT_ALIASES.get(term, term))
        found = self.movements.get(term)
        return display_movement(found) if found else None

    def medium(self, term: str) -> str | None:
        return self.mediums.get(clean_text(term).lower())


def display_movement(term: str) -> str:
    """"post-impressionism" -> "Post-Impressionism", "ukiyo-e" -> "Ukiyo-e"."""
    words = []
    for word in term.split(" "):
        parts = word.split("-")
        parts = [p if len(p) <= 1 else p[:1].upper() + p[1:] for p in parts]
        words.append("-".join(parts) if word not in ("and", "of", "de", "für", "&") else word)
    return " ".join(words)


def _new_record(source: str, line: int, raw: str, form: str, first_names: frozenset[str], report: BuildReport) -> Record | None:
    reason = _non_artist_reason(form)
    if reason:
        report.dropped.append(Dropped(source, line, raw, reason))
        return None
    primary, links = expand_name(form, first_names)
    reason = _non_artist_reason(primary)
    if reason:
        report.dropped.append(Dropped(source, line, raw, reason))
        return None
    record = Record(source=source, line=line, raw=raw, name=primary, key=name_key(primary), links=links)
    record.display_forms.append((PRIORITY[source] * 2, primary))
    return record


def _parse_note_links(note: str) -> tuple[list[NameLink], bool]:
    """Links in a style-studies note; the bool says "this artist doesn't exist"."""
    links: list[NameLink] = []
    text = clean_text(note)
    if re.search(r"doesn'?t exist|does not exist", text, re.IGNORECASE):
        return links, True
    match = re.match(r"^AKA\s+(.+)$", text)
    if match:
        body = re.split(r";", match.group(1))[0].strip().rstrip(".")
        pieces = re.split(r",\s*also\s+", body)
        for index, piece in enumerate(pieces):
            piece = piece.strip().strip('"')
            if index == 0 and ", " in piece:
                piece = invert_name(piece)
            if piece:
                links.append(NameLink(piece, "aka", True))
    quoted = re.match(r'^Also(?: just)? "([^"]+)"', text)
    if quoted:
        links.append(NameLink(quoted.group(1), "also", True))
    else:
        match = re.match(r'^Also ([^"].+)$', text)
        if match:
            links.append(NameLink(match.group(1).strip(), "also", True))
    match = re.match(r"^Mis+pelling of (.+)$", text, re.IGNORECASE)
    if match:
        links.append(NameLink(match.group(1).strip().rstrip("."), "misspelling", True))
    match = re.match(r'^Actual name is "([^"]+)"', text)
    if match:
        links.append(NameLink(match.group(1), "actual-name", True))
    return links, False


def collect_first_names(sources_dir: Path) -> frozenset[str]:
    """Given names seen anywhere (lower case): tells "Alfons (Alphonse)" from "(RossDraws)"."""
    names: set[str] = set()
    with open(sources_dir / SOURCE_FILES["sdxl-studies"], encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            first = clean_text(row.get("first_name", ""))
            if not is_placeholder(first):
                names.update(t.casefold() for t in re.findall(r"[^\W\d_]{2,}", first))
    for _, entry in _json_entries(sources_dir / SOURCE_FILES["sd15-excluded"]):
        names.update(t.casefold() for t in re.findall(r"[^\W\d_]{2,}", entry.get("FirstName", "")))
    for line in _read_text(sources_dir / SOURCE_FILES["clip-interrogator"]).splitlines():
        tokens = clean_text(line).split(" ")
        if len(tokens) >= 2 and re.fullmatch(r"[^\W\d_]{2,}", tokens[0]):
            names.add(tokens[0].casefold())
    return frozenset(names)


def read_sources(sources_dir: Path, report: BuildReport) -> tuple[list[Record], Vocabulary]:
    """Every source line as a record (or a drop with its reason)."""
    for name, file in SOURCE_FILES.items():
        if not (sources_dir / file).exists():
            raise SourceError(f"source file {sources_dir / file} not found ({name})")
    vocabulary = Vocabulary(
        _read_text(sources_dir / MOVEMENTS_FILE).splitlines(),
        _read_text(sources_dir / MEDIUMS_FILE).splitlines(),
    )
    first_names = collect_first_names(sources_dir)
    records: list[Record] = []
    records += _read_sdxl(sources_dir / SOURCE_FILES["sdxl-studies"], first_names, vocabulary, report)
    records += _read_cheatsheet(sources_dir / SOURCE_FILES["sd15-cheatsheet"], first_names, vocabulary, report)
    records += _read_excluded(sources_dir / SOURCE_FILES["sd15-excluded"], first_names, report)
    records += _read_clip(sources_dir / SOURCE_FILES["clip-interrogator"], first_names, report)
    records += _read_wikiart(sources_dir / SOURCE_FILES["wikiart"], first_names, vocabulary, report)
    for source in SOURCES:
        report.records[source] = sum(r.source == source for r in records)
    return records, vocabulary


def _classify_terms(record: Record, terms: Iterable[str], vocabulary: Vocabulary, keep_as_tags: bool) -> None:
    for term in terms:
        low = clean_text(term).lower()
        if not low or is_placeholder(low):
            continue
        country = COUNTRY_NAMES.get(low)
        movement = vocabulary.movement(low)
        medium = vocabulary.medium(low)
        if country and not keep_as_tags:
            record.nationality.append(country)
            continue
        if movement:
            record.movements.append((movement, 0))
        if medium:
            record.mediums.append(medium)
        if keep_as_tags or not (movement or medium):
            record.tags.append(low)


def _read_sdxl(path: Path, first_names: frozenset[str], vocabulary: Vocabulary, report: BuildReport) -> list[Record]:
    out: list[Record] = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"first_name", "last_name", "year_of_death"} - set(reader.fieldnames or [])
        if missing:
            raise SourceError(f"{path}:1: missing column(s) {sorted(missing)}")
        count = 0
        line = 1
        for row in reader:
            count += 1
            line = reader.line_num
            first = clean_text(row.get("first_name") or "")
            last = clean_text(row.get("last_name") or "")
            raw = clean_text(row.get("name") or f"{first} {last}")
            form = " ".join(p for p in (first, last) if not is_placeholder(p))
            note = clean_text(row.get("notes") or "")
            note_links, nonexistent = _parse_note_links(note) if note else ([], False)
            if nonexistent:
                report.dropped.append(Dropped("sdxl-studies", line, raw, f"the source says so: {note!r}"))
                continue
            record = _new_record("sdxl-studies", line, raw, form, first_names, report)
            if record is None:
                continue
            record.links += note_links
            if note and not note_links:
                record.notes.append(f"style studies: {note}")
            death = clean_text(row.get("year_of_death") or "")
            record.died = _year(death)
            if record.died is None and death.upper().startswith("N/A"):
                record.living = True  # the sheet writes N/A for living artists
            for column in ("recognized_sdxl", "recognized_sd1"):
                value = clean_text(row.get(column) or "").lower()
                setattr(record, column, value if value in ("yes", "no", "unsure") else "")
            _classify_terms(record, _split_tags(row.get("tags") or ""), vocabulary, keep_as_tags=True)
            out.append(record)
    report.lines_read["sdxl-studies"] = count
    return out


def _prompt_name(prompt: str) -> str:
    text = clean_text(prompt)
    text = re.sub(r"^style of\s+", "", text, flags=re.IGNORECASE)
    text = re.split(r",|\s\(\+", text)[0]
    return clean_text(text)


def _json_entries(path: Path) -> list[tuple[int, dict]]:
    """The objects of a JSON array file, each with the line its ``{`` is on."""
    text = _read_text(path)
    decoder = json.JSONDecoder()
    index = text.find("[")
    if index < 0:
        raise SourceError(f"{path}:1: expected a JSON array of objects")
    index += 1
    entries: list[tuple[int, dict]] = []
    line, counted = 1, 0  # lines before `counted`, kept incremental (files are ~10k lines)
    while True:
        while index < len(text) and text[index] in " \t\r\n,":
            index += 1
        if index >= len(text):
            raise SourceError(f"{path}: the JSON array is not closed")
        if text[index] == "]":
            return entries
        line += text.count("\n", counted, index)
        counted = index
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise SourceError(f"{path}:{line}: expected an object, found {type(value).__name__}")
        entries.append((line, value))


def _read_cheatsheet(path: Path, first_names: frozenset[str], vocabulary: Vocabulary, report: BuildReport) -> list[Record]:
    entries = _json_entries(path)
    out: list[Record] = []
    for number, entry in entries:
        raw = clean_text(entry.get("Name", ""))
        record = _new_record("sd15-cheatsheet", number, raw, invert_name(raw), first_names, report)
        if record is None:
            continue
        prompt = _prompt_name(entry.get("Prompt", ""))
        if prompt and name_key(prompt) != record.key and not is_placeholder(prompt):
            record.links.append(NameLink(prompt, "prompt", True))
        if prompt:
            record.display_forms.append((PRIORITY["sd15-cheatsheet"] * 2 - 1, prompt))
        record.born = _year(entry.get("Born"))
        record.died = _year(entry.get("Death"))
        if record.died is None and record.born is not None and record.born > LIVING_IF_BORN_AFTER:
            record.living = True
        record.recognized_sd1 = "yes"
        _classify_terms(record, (entry.get("Category") or "").split(","), vocabulary, keep_as_tags=False)
        record.tags = [t for t in record.tags if not _CENTURY.match(t)] + [
            t for t in record.tags if _CENTURY.match(t)
        ]
        info = clean_text(entry.get("Extrainfo") or "")
        checkpoint = clean_text(entry.get("Checkpoint") or "")
        tip = f"SD 1.5 cheat sheet ({checkpoint})" if checkpoint else "SD 1.5 cheat sheet"
        if info:
            record.notes.append(f"{tip}: {info}")
        out.append(record)
    report.lines_read["sd15-cheatsheet"] = len(entries)
    return out


def _read_excluded(path: Path, first_names: frozenset[str], report: BuildReport) -> list[Record]:
    entries = _json_entries(path)
    out: list[Record] = []
    for number, entry in entries:
        first = clean_text(entry.get("FirstName", ""))
        last = clean_text(entry.get("Name", ""))
        form = " ".join(p for p in (first, last) if not is_placeholder(p))
        raw = f"{last}, {first}" if first else last
        record = _new_record("sd15-excluded", number, raw, form, first_names, report)
        if record is None:
            continue
        code = clean_text(str(entry.get("Code", "")))
        verdict, meaning = EXCLUSION_CODES.get(code, ("unsure", "unknown code"))
        record.recognized_sd1 = verdict
        info = clean_text(entry.get("Extrainfo") or "")
        for tested in re.findall(r"'([^']+)'", info) if "tested" in info else []:
            record.links.append(NameLink(tested, "also-tested", True))
        record.notes.append(
            f"SD 1.5 cheat sheet: excluded, code {code} ({meaning})" + (f": {info}" if info else "")
        )
        out.append(record)
    report.lines_read["sd15-excluded"] = len(entries)
    return out


def _read_clip(path: Path, first_names: frozenset[str], report: BuildReport) -> list[Record]:
    out: list[Record] = []
    count = 0
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        count += 1
        record = _new_record("clip-interrogator", number, line, clean_text(line), first_names, report)
        if record is not None:
            out.append(record)
    report.lines_read["clip-interrogator"] = count
    return out


def wikiart_display_name(slug: str) -> str:
    """"claude-monet" -> "Claude Monet", "leonardo-da-vinci" -> "Leonardo da Vinci"."""
    words = []
    for index, word in enumerate(fix_mojibake(slug).replace("-", " ").split()):
        if index > 0 and word in PARTICLES or word in ("the", "of"):
            words.append(word)
        elif word.startswith("("):
            words.append("(" + word[1:2].upper() + word[2:])
        else:
            # "a.y." -> "A.Y.", "o'keeffe" -> "O'Keeffe"
            words.append(re.sub(r"(^|[.'])([a-z])", lambda m: m.group(1) + m.group(2).upper(), word))
    return clean_text(" ".join(words))


def _read_wikiart(path: Path, first_names: frozenset[str], vocabulary: Vocabulary, report: BuildReport) -> list[Record]:
    by_slug: dict[str, Record] = {}
    count = 0
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"artist_slug", "style", "n_images"} - set(reader.fieldnames or [])
        if missing:
            raise SourceError(f"{path}:1: missing column(s) {sorted(missing)}")
        for row in reader:
            count += 1
            slug = (row.get("artist_slug") or "").strip()
            style = (row.get("style") or "").strip()
            try:
                weight = int(row.get("n_images") or 0)
            except ValueError:
                raise SourceError(
                    f"{path}:{reader.line_num}: n_images must be an integer but is {row.get('n_images')!r}"
                ) from None
            if slug not in by_slug:
                record = _new_record("wikiart", reader.line_num, slug, wikiart_display_name(slug), first_names, report)
                if record is None:
                    by_slug[slug] = None  # type: ignore[assignment]
                    continue
                by_slug[slug] = record
            record = by_slug[slug]
            if record is None:
                continue
            movement = vocabulary.movement(style) or display_movement(style.replace("_", " ").lower())
            record.movements.append((movement, weight))
    report.lines_read["wikiart"] = count
    return [r for r in by_slug.values() if r is not None]
