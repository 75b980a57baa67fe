"""Build ``styles.csv`` from the public artist lists in ``shared/data/artist-sources``.

Steps (each deterministic, so a rebuild from the same sources is byte-identical):

1. **Read** every source into records (one per line or entry): a display name, a
   matching key (``catalog.names.name_key``), the other names the line carries (links),
   and facts (years, tags, movements, mediums, recognition). Lines that are not artists
   are dropped with a reason (job titles such as "senior artist", the sheet's own "this
   artist doesn't exist", blank names).
2. **Merge** records into artists, in passes, each counted in the report:
   ``same-name`` (equal keys: case, accents, spacing, dots of initials, "N/A" first
   names do not matter), ``link`` (a name another line gives for the same artist:
   "Hokusai (Katsushika Hokusai)", "AKA Moebius", a cheat-sheet prompt "style of Max
   Ernst", "also tested 'Peter Konig'"), then heuristics judged on one snapshot, each
   requiring a single fitting candidate on both sides: ``initials`` ("J. M. W. Turner" =
   "Joseph Mallord William Turner"; ``initials+year``: "William Turner" with the same
   death year), ``surname`` (a bare "Monet" = the artist of that surname that most
   lists name), ``middle-name`` ("Edwin Landseer" = "Edwin Henry Landseer"),
   ``spelling`` (transliterations and one-letter slips in a given name: "Aleksey" /
   "Alexei", "Katsuchika" / "Katsushika"), ``same-year`` (same surname and initial, same
   death year: "Jan" / "Johannes Vermeer"), ``surname-spelling`` ("Panini" / "Pannini",
   same given names), ``spacing`` and ``word-order``
   ("Kawase Hasui" / "Hasui Kawase").
   A merge is refused when the two sides disagree on their years (died 1510 vs living),
   when a link's target is claimed by two different artists ("AKA Monsù Desiderio" is
   given for two painters), when one list names both forms (a list naming "Gavin" and
   "Gawen Hamilton" means two painters), or when the pair is in ``REJECTED_LINKS`` /
   ``DISTINCT_PEOPLE`` (reviewed false positives). Generational markers are part of the
   key, so "the Elder" and "the Younger" never merge. ``--report FILE`` lists every
   heuristic merge for review.
3. **Write** one row per artist, sorted by ``artist_id`` (a slug of the display name;
   people who share a slug get their birth or death year appended).
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from catalog.model import Artist, write_catalog
from catalog.names import (
    PARTICLES,
    NameLink,
    clean_text,
    edit_distance_at_most_one,
    expand_name,
    fix_mojibake,
    has_generational,
    invert_name,
    is_latin,
    is_placeholder,
    name_key,
    slugify,
)
from evaluator.errors import InputError

# Short source names, in priority order: the first is trusted most for names and facts
# (the style-studies sheet is curated by hand; WikiArt slugs have lost case and accents).
SOURCES = (
    "sdxl-studies",
    "sd15-cheatsheet",
    "sd15-excluded",
    "clip-interrogator",
    "wikiart",
)
SOURCE_FILES = {
    "sdxl-studies": "sdxl-style-studies-artists.csv",
    "sd15-cheatsheet": "sd15-cheatsheet-artists.json",
    "sd15-excluded": "sd15-cheatsheet-excluded.json",
    "clip-interrogator": "clip-interrogator-artists.txt",
    "wikiart": "wikiart-artist-styles.csv",
}
MOVEMENTS_FILE = "clip-interrogator-movements.txt"
MEDIUMS_FILE = "clip-interrogator-mediums.txt"
PRIORITY = {name: index for index, name in enumerate(SOURCES)}

# The SD 1.5 cheat sheet's exclusion codes -> recognized_sd1. 404 (not known), 304
# (something unrelated recognized) and 301 (results too different) mean the model does
# not render the artist: "no". 205 (recognized but hard to prompt), 204 (recognized but
# generic) and 500 (other problems, e.g. no safe-for-work images) mean some knowledge
# without a usable style: "unsure".
EXCLUSION_CODES = {
    "404": ("no", "not known"),
    "304": ("no", "something unrelated recognized"),
    "301": ("no", "results too different"),
    "205": ("unsure", "recognized but hard to prompt"),
    "204": ("unsure", "recognized but generic"),
    "500": ("unsure", "other problem"),
}
# Sources date from 2023-2024. A cheat-sheet artist with a birth year and no death year
# counts as living only if born after this year: an 1850 birth without a death year is a
# gap in the sheet, not a 174-year-old painter. Fixed (not today's year) so rebuilds are
# identical.
LIVING_IF_BORN_AFTER = 1915

# Lines whose every word is one of these are job titles, not names ("senior artist").
GENERIC_WORDS = frozenset(
    {"artist", "artists", "senior", "junior", "lead", "principal", "character", "environment",
     "concept", "illustrator", "painter", "designer", "art", "style", "unknown", "anonymous",
     "various", "trending", "artstation", "deviantart", "behance"}
)
# Names that are not artists, with the reason reported when they are dropped.
NON_ARTISTS = {
    "national geographic": "a magazine, not an artist",
}
# Links in the sources known to be wrong, refused with the reason given. The style-studies
# sheet has notes that belong to a neighbouring row: Giorgione is "Giorgio Barbarelli da
# Castelfranco", not Ron Arad nor Ralph Bakshi; Michael Cheval is a painter of his own.
REJECTED_LINKS = {
    ("ron arad", "giorgione"): "note belongs to another row (Giorgione)",
    ("ralph bakshi", "giorgio barbarelli da castelfranco"): "note belongs to another row (Giorgione)",
    ("michael cheval", "alexander fedosov"): "note belongs to another row",
}

# Pairs of names that the heuristics would join but that are two people (family
# members, namesakes); every heuristic merge is listed by `atelier catalog build --report`
# for review, and a wrong one is recorded here.
DISTINCT_PEOPLE = {
    ("john alexander", "john white alexander"): "John Alexander (b. 1945) is not John White Alexander (1856-1915)",
    ("arthur boyd", "arthur merric boyd"): "Arthur Boyd is the grandson of Arthur Merric Boyd",
    ("william scott", "william edouard scott"): "the Scottish painter is not the American one",
    ("alexander calder", "alexander milne calder"): "grandson and grandfather",
    ("alexander calder", "alexander stirling calder"): "son and father",
}

# Cheat-sheet categories: countries give nationality, the rest mediums, movements or tags.
COUNTRY_NAMES = {
    "usa": "USA", "american": "USA", "uk": "UK", "england": "UK", "scotland": "Scotland",
    "wales": "Wales", "ireland": "Ireland", "france": "France", "germany": "Germany",
    "japan": "Japan", "italy": "Italy", "netherlands": "Netherlands", "canada": "Canada",
    "russia": "Russia", "poland": "Poland", "australia": "Australia", "austria": "Austria",
    "spain": "Spain", "switzerland": "Switzerland", "belgium": "Belgium", "sweden": "Sweden",
    "brazil": "Brazil", "china": "China", "denmark": "Denmark", "israel": "Israel",
    "ukraine": "Ukraine", "belarus": "Belarus", "norway": "Norway", "czech republic": "Czech Republic",
    "mexico": "Mexico", "philippines": "Philippines", "south korea": "South Korea",
    "lithuania": "Lithuania", "romania": "Romania", "argentina": "Argentina", "taiwan": "Taiwan",
    "bulgaria": "Bulgaria", "portugal": "Portugal", "hungary": "Hungary", "finland": "Finland",
    "lebanese": "Lebanon", "lebanon": "Lebanon", "crimea": "Crimea", "iran": "Iran",
    "uruguay": "Uruguay", "slovakia": "Slovakia", "haiti": "Haiti", "palestine": "Palestine",
    "colombia": "Colombia", "nigeria": "Nigeria", "greece": "Greece", "guernsey": "Guernsey",
    "new zealand": "New Zealand", "egypt": "Egypt", "cocos islands": "Cocos Islands",
    "latvia": "Latvia", "singapore": "Singapore", "vietnam": "Vietnam", "iraq": "Iraq",
    "guatemala": "Guatemala", "south africa": "South Africa", "india": "India",
    "albania": "Albania", "costa rica": "Costa Rica", "estonia": "Estonia", "croatia": "Croatia",
    "serbia": "Serbia", "armenia": "Armenia", "puerto rico": "Puerto Rico", "turkey": "Turkey",
    "peru": "Peru", "flemish": "Flanders",
}
# Medium words (from cheat-sheet categories and style-studies tags) -> canonical medium.
MEDIUM_WORDS = {
    "painting": "painting", "oil": "oil", "watercolor": "watercolor", "ink": "ink",
    "acrylic": "acrylic", "gouache": "gouache", "guache": "gouache", "pastel": "pastel",
    "pastels": "pastel", "charcoal": "charcoal", "pencil": "pencil", "chalk": "chalk",
    "tempera": "tempera", "photography": "photography", "sculpture": "sculpture",
    "marble": "marble", "lithography": "lithography", "woodcut": "woodcut",
    "woodblock print": "woodblock print", "engraving": "engraving", "aquatint": "aquatint",
    "linocut": "linocut", "screen print": "screen print", "print": "print", "collage": "collage",
    "stained glass": "stained glass", "glas": "glass", "3d": "3d", "installation": "installation",
    "installation art": "installation", "light installation": "installation",
    "architecture": "architecture", "illustration": "illustration", "illstration": "illustration",
    "drawing": "drawing", "animation": "animation", "graphic design": "graphic design",
    "digital": "digital", "digital art": "digital", "textile": "textile", "film": "film",
    "comic": "comics", "comics": "comics", "manga": "manga", "graffiti": "graffiti",
    "grafitti": "graffiti", "poster": "poster", "industrial design": "industrial design",
    "fashion design": "fashion", "mosaic": "mosaic", "etching": "etching", "tattoo": "tattoo",
}
# Phrases of the clip-interrogator "mediums" list that are subjects or formats, not media.
NOT_MEDIUMS = frozenset(
    {"portrait", "character portrait", "still life", "picture", "diagram", "wireframe diagram",
     "screenshot", "jigsaw puzzle", "painting", "drawing", "sketch", "photo", "statue"}
)
# Spellings in the sources -> movement names of the clip-interrogator list.
MOVEMENT_ALIASES = {
    "pop-art": "pop art", "op-art": "op art", "psychedelic": "psychedelic art",
    "shin-hanga": "shin hanga", "moderism": "modernism", "informel": "art informel",
    "naive art primitivism": "naive art", "art nouveau modern": "art nouveau", "ukiyo e": "ukiyo-e",
    "mannerism late renaissance": "mannerism", "color field painting": "color field",
    "gothic": "gothic art", "concretism": "concrete art", "muralismo": "muralism",
}
# WikiArt styles beyond the clip-interrogator list, kept as movements.
EXTRA_MOVEMENTS = frozenset(
    {"early renaissance", "high renaissance", "northern renaissance", "contemporary realism",
     "new realism", "synthetic cubism", "analytical cubism", "muralism", "orientalism",
     "luminism", "social realism", "caravaggisti", "dutch golden age", "nihonga",
     "postmodernism", "storybook realism"}
)
# Links taken from free-text notes, which are checked against the years (see merge_records).
NOTE_LINK_KINDS = frozenset({"aka", "also", "misspelling", "actual-name", "also-tested"})
_CENTURY = re.compile(r"^\d{1,2}(st|nd|rd|th) century$")


@dataclass
class Record:
    """One source line naming one artist."""

    source: str
    line: int
    raw: str
    name: str
    key: str
    links: list[NameLink] = field(default_factory=list)
    display_forms: list[tuple[int, str]] = field(default_factory=list)  # (priority, form)
    born: int | None = None
    died: int | None = None
    living: bool | None = None
    nationality: list[str] = field(default_factory=list)
    movements: list[tuple[str, int]] = field(default_factory=list)  # (movement, weight)
    mediums: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    recognized_sdxl: str = ""
    recognized_sd1: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Dropped:
    source: str
    line: int
    text: str
    reason: str


@dataclass
class BuildReport:
    """What the builder read, dropped and merged; printed by ``atelier catalog build``."""

    lines_read: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    dropped: list[Dropped] = field(default_factory=list)
    merges: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    merge_log: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    artists: int = 0
    multi_source_artists: int = 0
    cross_source_merges: int = 0
    slug_collisions: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"artists: {self.artists}"]
        lines.append(
            "records read: "
            + ", ".join(f"{s} {self.records.get(s, 0)}/{self.lines_read.get(s, 0)}" for s in SOURCES)
        )
        reasons: dict[str, int] = defaultdict(int)
        for drop in self.dropped:
            reasons[drop.reason] += 1
        lines.append(f"dropped: {len(self.dropped)} line(s)")
        for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {count:5d}  {reason}")
        for drop in self.dropped:
            lines.append(f"    {drop.source}:{drop.line}: {drop.text!r} ({drop.reason})")
        lines.append(
            f"merged: {sum(self.merges.values())} merge(s) of records into artists; "
            f"{self.cross_source_merges} joined records of different sources; "
            f"{self.multi_source_artists} artists are named by 2+ sources"
        )
        for kind, count in sorted(self.merges.items()):
            lines.append(f"  {count:5d}  {kind}")
        lines.append(f"refused merges: {len(self.refused)}")
        lines.extend(f"    {line}" for line in self.refused)
        lines.append(f"slug collisions disambiguated: {self.slug_collisions}")
        lines.append(f"build time: {self.seconds:.2f} s")
        return "\n".join(lines)

    def details(self) -> str:
        """The summary plus every heuristic merge (for --report)."""
        return self.summary() + "\nmerges by heuristic and link:\n" + "\n".join(
            f"  {line}" for line in self.merge_log
        )


# ---------------------------------------------------------------------------- reading


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


# ---------------------------------------------------------------------------- merging


class Groups:
    """Union-find over records, with the facts needed to refuse a wrong merge."""

    def __init__(self, records: list[Record], report: BuildReport) -> None:
        self.records = records
        self.parent = list(range(len(records)))
        self.died = [{r.died} - {None} for r in records]
        self.born = [{r.born} - {None} for r in records]
        self.living = [r.living is True for r in records]
        self.keys = [[i] for i in range(len(records))]  # members of each root
        self.report = report

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def conflict(self, a: int, b: int, strict: bool) -> str | None:
        ra, rb = self.find(a), self.find(b)
        for label, years in (("died", self.died), ("born", self.born)):
            for x in years[ra]:
                for y in years[rb]:
                    if abs(x - y) > 1:
                        return f"{label} {x} vs {y}"
        if strict:
            if self.living[ra] and self.died[rb]:
                return f"living vs died {min(self.died[rb])}"
            if self.living[rb] and self.died[ra]:
                return f"living vs died {min(self.died[ra])}"
        return None

    def distinct(self, ra: int, rb: int) -> str | None:
        """A reason from DISTINCT_PEOPLE when the two groups are known to be two people."""
        keys_a = {self.records[i].key for i in self.keys[ra]}
        keys_b = {self.records[i].key for i in self.keys[rb]}
        for x in keys_a:
            for y in keys_b:
                reason = DISTINCT_PEOPLE.get((x, y)) or DISTINCT_PEOPLE.get((y, x))
                if reason:
                    return reason
        return None

    def union(self, a: int, b: int, kind: str, check_years: bool = True, why: str = "") -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        names = f"{self.records[ra].name!r} + {self.records[rb].name!r}"
        reason = self.conflict(ra, rb, strict=True) if check_years else None
        if reason is None and kind != "same-name":
            reason = self.distinct(ra, rb)
        if reason:
            self.report.refused.append(f"{kind}: {names}: {reason}{' (' + why + ')' if why else ''}")
            return False
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        self.parent[gone] = keep
        self.died[keep] |= self.died[gone]
        self.born[keep] |= self.born[gone]
        self.living[keep] = self.living[keep] or self.living[gone]
        self.keys[keep] += self.keys[gone]
        self.keys[gone] = []
        self.report.merges[kind] += 1
        if self.records[ra].source != self.records[rb].source or kind != "same-name":
            if kind != "same-name":
                self.report.merge_log.append(f"{kind}: {names}{' (' + why + ')' if why else ''}")
        return True

    def roots(self) -> dict[int, list[int]]:
        members: dict[int, list[int]] = defaultdict(list)
        for index in range(len(self.records)):
            members[self.find(index)].append(index)
        return members


def merge_records(records: list[Record], report: BuildReport) -> list[list[Record]]:
    """Group records into artists (see the module docstring for the passes)."""
    groups = Groups(records, report)
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_key[record.key].append(index)

    # 1. same key: the same name written alike (years must not disagree)
    # (years are not checked: equal names that disagree on a year are, in these lists,
    # one artist with a slip in one source, e.g. Lyonel Feininger died 1953 vs 1956; the
    # disagreement is written to the notes)
    for key in sorted(by_key):
        indices = by_key[key]
        for index in indices[1:]:
            groups.union(indices[0], index, "same-name", check_years=False)

    # 2. links: another name given on a line, when some source lists that name
    for record in records:
        kept = []
        for link in record.links:
            rejected = REJECTED_LINKS.get((record.key, name_key(link.name)))
            if rejected:
                report.refused.append(f"link: {record.name!r} -> {link.name!r}: {rejected}")
            else:
                kept.append(link)
        record.links = kept
    claims: dict[str, set[int]] = defaultdict(set)
    for index, record in enumerate(records):
        for link in record.links:
            link_key = name_key(link.name)
            if link_key and link_key != record.key:
                claims[link_key].add(groups.find(index))
    for index, record in enumerate(records):
        for link in record.links:
            link_key = name_key(link.name)
            if not link_key or link_key == record.key or link_key not in by_key:
                continue
            claimants = {groups.find(c) for c in claims[link_key]}
            if len(claimants) > 1 and groups.find(by_key[link_key][0]) not in claimants:
                report.refused.append(
                    f"link: {link.name!r} is given as another name of {len(claimants)} different artists"
                )
                continue
            # a name written on the same line (parentheses, the cheat sheet's own prompt)
            # is the line's own statement of identity; a note ("AKA ...") may belong to
            # the wrong row, so its years must agree
            groups.union(
                index,
                by_key[link_key][0],
                "link",
                check_years=link.kind in NOTE_LINK_KINDS,
                why=f"{record.source}:{record.line} {link.kind}",
            )

    _merge_heuristics(records, groups, report)
    members = groups.roots()
    return [[records[i] for i in sorted(idx)] for _, idx in sorted(members.items())]


def _group_keys(records: list[Record], indices: list[int]) -> set[str]:
    return {records[i].key for i in indices}


def _name_parts(name: str) -> tuple[list[str], str] | None:
    """(given-name keys, surname key) of a display name; None for duos and generations.

    The surname is the last word with its particles, hyphens kept: "Henry Macbeth-Raeburn"
    has the surname "macbeth raeburn", not "raeburn".
    """
    key = name_key(name)
    if not key or has_generational(key) or " and " in f" {key} ":
        return None
    words = clean_text(name).replace(",", " ").split()
    index = len(words) - 1
    while index > 0 and words[index - 1].lower() in PARTICLES and words[index - 1][:1].islower():
        index -= 1
    surname = name_key(" ".join(words[index:]))
    given = name_key(" ".join(words[:index])).split() if index else []
    return given, surname


# Sources that write a bare surname as shorthand ("Monet", "Klimt"); a bare name in the
# curated sheets is a deliberate single name ("Raphael", "Ziraldo") and needs more proof.
SHORTHAND_SOURCES = frozenset({"clip-interrogator", "wikiart"})


def _merge_heuristics(records: list[Record], groups: Groups, report: BuildReport) -> None:
    """Initials, surname-only, middle-name and spelling merges (module docstring).

    Every candidate is judged on one snapshot of the groups and must be the only fit on
    both sides, so the outcome does not depend on the order merges are tried in and a
    short name ("Alexander Calder") is not merged with two longer ones (his father and
    grandfather).
    """
    members = groups.roots()
    surname_index: dict[str, set[int]] = defaultdict(set)
    info: dict[int, list[tuple[list[str], str]]] = {}
    for root, indices in members.items():
        parsed = []
        for name in sorted({records[i].name for i in indices}):
            parts = _name_parts(name)
            if parts is None:
                continue
            if parts not in parsed:
                parsed.append(parts)
            if parts[0]:
                surname_index[parts[1]].add(root)
        info[root] = parsed

    planned_surname: list[tuple[int, int, str, str]] = []

    def died(root: int) -> set[int]:
        return groups.died[groups.find(root)]

    def same_death(a: int, b: int) -> bool:
        return bool(died(a)) and bool(died(b)) and bool(
            any(abs(x - y) <= 1 for x in died(a) for y in died(b))
        )

    def fits(root: int, rule) -> list[int]:
        out = []
        for given, surname in info[root]:
            for c in surname_index.get(surname, set()) - {root}:
                if any(s == surname and rule(given, g) for g, s in info[c]) and c not in out:
                    out.append(c)
        return sorted(out)

    def middle(a: list[str], b: list[str]) -> bool:
        return (
            bool(a) and bool(b) and a != b
            and _given_compatible(a, b)
            and any(len(x) > 1 and x in b for x in a)
        )

    def spelling(a: list[str], b: list[str]) -> bool:
        if len(a) != len(b) or a == b:
            return False
        diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(diffs) != 1:
            return False
        x, y = diffs[0]
        if len(x) == len(y) and x[:-1] == y[:-1] and x[-1] in "aoei" and y[-1] in "aoei":
            return False  # Francesco / Francesca: two people, not a spelling
        fx, fy = _spelling_fold(x), _spelling_fold(y)
        if fx == fy and len(fx) >= 4:
            return True  # Aleksey / Alexei, Vadim / Vadym, Philipp / Phillip
        return min(len(fx), len(fy)) >= 5 and edit_distance_at_most_one(fx, fy)

    # surname spelling: the same given names and a surname equal once folded ("Giovanni
    # Paolo Panini" / "Pannini", "Alex Maleev" / "Maleew"); folded equality only, since one
    # letter apart is often another person ("David Bailey" / "David Bailly")
    folded_index: dict[tuple[str, str], set[int]] = defaultdict(set)
    for root, parsed in info.items():
        for given, surname in parsed:
            if given and len(surname) >= 5:
                folded_index[(" ".join(given), _spelling_fold(surname.replace(" ", "")))].add(root)
    for (given_text, folded), roots in sorted(folded_index.items()):
        if len(roots) == 2:
            a, b = sorted(roots)
            if not _same_single_source(records, members[a], members[b]):
                planned_surname.append((a, b, "surname-spelling", f"{given_text} {folded}"))

    def same_year_rule(root: int):
        """Same surname, same first initial, and the same known death year: "Jan Vermeer"
        (died 1675) is "Johannes Vermeer" (died 1675)."""

        def rule(a: list[str], b: list[str], _root: int = root) -> bool:
            return bool(a) and bool(b) and a[0][0] == b[0][0] and a != b

        def with_year(a: list[str], b: list[str]) -> bool:
            return rule(a, b)

        with_year.needs_year = True  # type: ignore[attr-defined]
        return with_year

    planned: list[tuple[int, int, str, str]] = []
    for root in sorted(members):
        if not info[root]:
            continue
        multi = [p for p in info[root] if p[0]]
        single = [p for p in info[root] if not p[0]]
        sources = {records[i].source for i in members[root]}
        if single and not multi:
            # surname only ("Monet", "Van Gogh"): the one artist with that surname
            for _, surname in single:
                candidates = sorted(surname_index.get(surname, set()) - {root})
                chosen = _dominant(candidates, members, records)
                if chosen is not None and (sources <= SHORTHAND_SOURCES or same_death(root, chosen)):
                    planned.append((root, chosen, "surname", surname))
            continue
        for given, surname in multi:
            candidates = surname_index.get(surname, set()) - {root}
            # initials: "jmw turner" = "joseph mallord william turner"
            if len(given) == 1 and _looks_initials(records, members[root], given[0]):
                letters = given[0]
                exact = sorted(
                    c for c in candidates
                    if any(s == surname and g and "".join(t[0] for t in g) == letters for g, s in info[c])
                )
                if len(exact) == 1:
                    planned.append((root, exact[0], "initials", f"{letters} {surname}"))
                # "William Turner" with J. M. W. Turner's death year
                for c in sorted(candidates):
                    if same_death(root, c) and any(
                        s == surname and g and _subsequence("".join(t[0] for t in g), letters)
                        for g, s in info[c]
                    ):
                        planned.append((root, c, "initials+year", surname))
        for rule, kind in ((middle, "middle-name"), (spelling, "spelling"), (same_year_rule(root), "same-year")):
            found = fits(root, rule)
            if getattr(rule, "needs_year", False):
                found = [c for c in found if same_death(root, c)]
                back = [c for c in fits(found[0], rule) if same_death(found[0], c)] if len(found) == 1 else []
            else:
                back = fits(found[0], rule) if len(found) == 1 else []
            if len(found) == 1 and back == [root]:
                if kind != "same-year" and _same_single_source(records, members[root], members[found[0]]):
                    continue  # one list naming both forms means two people (Gavin / Gawen Hamilton)
                planned.append((root, found[0], kind, ""))
    # the same letters spaced differently ("Kerem Beyit"/"KeremBeyit") or the same words in
    # another order (family name first: "Hasui Kawase"/"Kawase Hasui")
    for kind, fold in (
        ("spacing", lambda k: k.replace(" ", "")),
        ("word-order", lambda k: " ".join(sorted(k.split()))),
    ):
        buckets: dict[str, set[int]] = defaultdict(set)
        for root, indices in members.items():
            for key in _group_keys(records, indices):
                if len(key.replace(" ", "")) >= 5:
                    buckets[fold(key)].add(root)
        for folded, roots in sorted(buckets.items()):
            ordered = sorted(roots)
            for other in ordered[1:]:
                planned.append((ordered[0], other, kind, folded))
    planned += planned_surname
    seen: set[tuple[int, int]] = set()
    for a, b, kind, why in planned:
        pair = (min(a, b), max(a, b))
        if pair in seen:
            continue
        seen.add(pair)
        groups.union(a, b, kind, why=why)


def _spelling_fold(name: str) -> str:
    """Fold transliteration variants of a given name: ks->x, ph->f, y->i, w->v, no doubles."""
    folded = name.replace("ks", "x").replace("ph", "f").replace("th", "t").replace("y", "i").replace("w", "v")
    return re.sub(r"(.)\1+", r"\1", folded)


def _dominant(candidates: list[int], members: dict[int, list[int]], records: list[Record]) -> int | None:
    """The only candidate, or the one every list names when the others appear in one list.

    A bare "Monet" is Claude Monet (named by four lists), not Blanche Hoschedé Monet
    (named by one); with two well-known candidates the surname stays its own entry.
    """
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    counts = {c: len({records[i].source for i in members[c]}) for c in candidates}
    best = max(candidates, key=lambda c: (counts[c], -c))
    others = [counts[c] for c in candidates if c != best]
    if counts[best] >= 3 and max(others) == 1:
        return best
    return None


def _token_fits(a: str, b: str) -> bool:
    return a == b or (len(a) == 1 and b.startswith(a)) or (len(b) == 1 and a.startswith(b))


def _given_compatible(a: list[str], b: list[str]) -> bool:
    """Given names of one person written fully or not: the shorter list fits in order."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if not short or not _token_fits(short[0], long[0]):
        return False
    if len(short) == len(long):
        return all(_token_fits(x, y) for x, y in zip(short, long, strict=True)) and short != long
    rest = iter(long[1:])
    return all(any(_token_fits(x, y) for y in rest) for x in short[1:])


def _same_single_source(records: list[Record], a: list[int], b: list[int]) -> bool:
    sources = {records[i].source for i in a} | {records[i].source for i in b}
    return len(sources) == 1


def _looks_initials(records: list[Record], indices: list[int], token: str) -> bool:
    """Was this given-name token written as initials ("J.M.W.", "J. M. W.", "JMW")?"""
    if not 1 <= len(token) <= 4:
        return False
    for i in indices:
        given = records[i].name.rsplit(" ", 1)[0] if " " in records[i].name else ""
        if re.fullmatch(r"([A-Z]\.?\s*){1,4}", given) or re.fullmatch(r"[A-Z]{2,4}", given):
            return True
    return False


def _subsequence(small: str, big: str) -> bool:
    iterator = iter(big)
    return all(ch in iterator for ch in small)


# ---------------------------------------------------------------------------- artists


def _surface(text: str) -> str:
    return re.sub(r"[\s.,]", "", text.casefold())


def _name_rank(priority: int, form: str) -> tuple:
    from catalog.names import ascii_fold

    return (
        not is_latin(form),
        priority,
        " " not in form,  # prefer "Jean Giraud" to "Moebius" among equals
        form == form.lower(),
        ascii_fold(form) == form,  # prefer the accented form
        form,
    )


def _pick_name(group: list[Record]) -> str:
    forms = [(p, f) for r in group for p, f in r.display_forms]
    best = min(forms, key=lambda pf: _name_rank(*pf))[1]
    # put accents back: "Salvador Dali" -> "Salvador Dalí" when a source writes it so
    from catalog.names import ascii_fold

    if ascii_fold(best) == best:
        accented = sorted(
            f for _, f in forms if f != best and ascii_fold(f) == best and f != f.lower()
        )
        if accented:
            best = accented[0]
    if best == best.lower() and " " in best:
        # only an all-lower-case form was seen ("ridley scott"): capitalize the words
        best = " ".join(
            w if w in PARTICLES else "-".join(p[:1].upper() + p[1:] for p in w.split("-"))
            for w in best.split(" ")
        )
    return best


def _ordered_unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for value in values:
        folded = value.casefold()
        if value and folded not in seen:
            seen.add(folded)
            out.append(value)
    return out


def make_artist(group: list[Record], artist_id: str) -> Artist:
    """One catalog row from the records of one artist."""
    from catalog.names import ascii_fold

    group = sorted(group, key=lambda r: (PRIORITY[r.source], r.line))
    name = _pick_name(group)
    notes: list[str] = []
    forms = [f for r in group for _, f in r.display_forms]
    forms += [link.name for r in group for link in r.links if link.confident]
    by_key = {r.key for r in group}
    forms += [link.name for r in group for link in r.links if not link.confident and name_key(link.name) in by_key]
    seen_surfaces = {_surface(name)}
    aliases = []
    for form in sorted(set(forms), key=lambda f: (f.casefold(), f)):
        surface = _surface(form)
        if surface in seen_surfaces or form == form.lower() and any(
            _surface(ascii_fold(a)) == _surface(ascii_fold(form)) for a in forms if a != form
        ):
            continue
        seen_surfaces.add(surface)
        aliases.append(form)

    def first_fact(attribute: str) -> tuple[int | None, list[str]]:
        values = [(getattr(r, attribute), r.source) for r in group if getattr(r, attribute) is not None]
        distinct = sorted({v for v, _ in values})
        if len(distinct) > 1:
            shown = ", ".join(f"{v} ({s})" for v, s in values)
            return values[0][0], [f"sources disagree on {attribute}: {shown}"]
        return (values[0][0] if values else None), []

    born, born_notes = first_fact("born")
    died, died_notes = first_fact("died")
    notes += born_notes + died_notes
    if died is not None:
        living: bool | None = False
        if any(r.living for r in group):
            notes.append(f"listed as living by one source but died {died} by another")
    else:
        living = True if any(r.living for r in group) else None
    if born is not None and died is not None and died < born:
        notes.append(f"sources give died {died} before born {born}; years dropped")
        born = died = None
        living = None

    nationality = _ordered_unique(n for r in group for n in r.nationality)
    weights: dict[str, int] = defaultdict(int)
    for r in group:
        for movement, weight in r.movements:
            weights[movement] += weight
    movements = sorted(weights, key=lambda m: (-weights[m], m))
    mediums = _ordered_unique(m for r in group for m in r.mediums)
    tags = _ordered_unique(t for r in group for t in r.tags)

    sdxl_votes = sorted({r.recognized_sdxl for r in group if r.recognized_sdxl})
    recognized_sdxl = sdxl_votes[0] if len(sdxl_votes) == 1 else ("unsure" if sdxl_votes else "")
    sd1_votes = {r.recognized_sd1 for r in group if r.recognized_sd1}
    if len(sd1_votes) == 1:
        recognized_sd1 = next(iter(sd1_votes))
    elif sd1_votes:
        recognized_sd1 = "unsure"
        votes = ", ".join(f"{r.recognized_sd1} ({r.source})" for r in group if r.recognized_sd1)
        notes.append(f"SD 1.5 recognition disagrees between sources: {votes}")
    else:
        recognized_sd1 = ""
    if len(sdxl_votes) > 1:
        notes.append(f"SDXL recognition disagrees: {', '.join(sdxl_votes)}")

    sources = [s for s in SOURCES if any(r.source == s for r in group)]
    notes = _ordered_unique([n for r in group for n in r.notes] + notes)
    return Artist(
        artist_id=artist_id,
        name=name,
        aliases=tuple(aliases),
        born=born,
        died=died,
        living=living,
        nationality="; ".join(nationality),
        movements=tuple(movements),
        mediums=tuple(mediums),
        tags=tuple(tags),
        recognized_sdxl=recognized_sdxl,
        recognized_sd1=recognized_sd1,
        sources=tuple(sources),
        notes=" | ".join(notes),
    )


def assign_ids(groups: list[list[Record]], report: BuildReport) -> list[str]:
    """A slug per group; people sharing a slug get a year (or a number) appended."""
    base = []
    for group in groups:
        slug = slugify(_pick_name(group))
        if not slug:
            slug = next((slugify(r.key) for r in group if slugify(r.key)), "artist")
        base.append(slug)
    by_slug: dict[str, list[int]] = defaultdict(list)
    for index, slug in enumerate(base):
        by_slug[slug].append(index)
    ids = list(base)
    taken = set(base)
    for slug, indices in sorted(by_slug.items()):
        if len(indices) == 1:
            continue
        report.slug_collisions += len(indices) - 1

        def rank(i: int) -> tuple:
            group = groups[i]
            return (-len({r.source for r in group}), -len(group), min(r.key for r in group), i)

        ordered = sorted(indices, key=rank)
        for position, index in enumerate(ordered[1:], start=2):
            group = groups[index]
            years = [r.born for r in group if r.born] or [r.died for r in group if r.died]
            candidate = f"{slug}-{min(years)}" if years else f"{slug}-{position}"
            number = position
            while candidate in taken:
                number += 1
                candidate = f"{slug}-{number}"
            taken.add(candidate)
            ids[index] = candidate
    return ids


def build_catalog(sources_dir: str | Path) -> tuple[list[Artist], BuildReport]:
    """Read, merge and shape every source; return the artists and what happened."""
    started = time.perf_counter()
    report = BuildReport()
    records, _ = read_sources(Path(sources_dir), report)
    groups = merge_records(records, report)
    ids = assign_ids(groups, report)
    artists = [make_artist(group, artist_id) for group, artist_id in zip(groups, ids, strict=True)]
    artists.sort(key=lambda a: a.artist_id)
    report.artists = len(artists)
    report.multi_source_artists = sum(len(a.sources) > 1 for a in artists)
    report.cross_source_merges = sum(len({r.source for r in g}) - 1 for g in groups)
    report.seconds = time.perf_counter() - started
    return artists, report


def default_sources_dir() -> Path:
    """``../shared/data/artist-sources`` beside the repository."""
    import catalog

    return Path(catalog.__file__).resolve().parent.parent.parent / "shared" / "data" / "artist-sources"


def build_styles_csv(sources_dir: str | Path, out: str | Path, report_path: str | Path | None = None) -> BuildReport:
    """Build and write ``styles.csv`` (atomically); optionally write the full report."""
    artists, report = build_catalog(sources_dir)
    write_catalog(artists, out)
    if report_path:
        from catalog.atomic import atomic_write_text

        atomic_write_text(report_path, report.details() + "\n")
    return report
