"""Artist-name forms: cleaning, inverting, matching keys, slugs and the links in names.

The sources spell one artist many ways: "Monet, Claude", "Claude Monet", "claude-monet",
"Hokusai (Katsushika Hokusai)", "J.M.W. Turner" / "J. M. W. Turner", accents or not, odd
case and spacing, "N/A" for a missing first name. ``name_key`` maps the forms of one
name to one matching key; ``expand_name`` splits off the other names a form carries
(parentheses, quoted nicknames) so the builder can use them as links.

Generational markers stay in the key: "Pieter Bruegel the Elder" and "Pieter Brueghel
the Younger" are two painters, and so are "George Barret, Sr." and "George Barret, Jr.".

Reads and writes nothing: pure functions on strings, used by ``catalog.build`` and by the
importer's ``slugify``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

PLACEHOLDERS = frozenset({"", "n/a", "na", "n.a.", "-", "--", "none", "null", "unknown", "?", "nan"})
# Lower-case name particles that belong to the surname ("van Gogh", "da Vinci").
PARTICLES = frozenset(
    {"van", "von", "de", "da", "di", "del", "della", "der", "den", "des", "du", "la", "le",
     "ter", "ten", "y", "dos", "das", "do", "af", "zu", "el", "al", "bin", "ibn", "st"}
)
# Titles before a name, dropped from the matching key (never from the display name).
HONORIFICS = frozenset({"sir", "dame"})
GENERATIONAL = ("the elder", "the younger", "jr", "sr", "ii", "iii", "iv")
_SPACES = re.compile(r"[\s\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_QUOTES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"', "\u00b4": "'"}


@functools.lru_cache(maxsize=1 << 17)
def clean_text(text: str) -> str:
    """NFC, straight quotes, single spaces, no surrounding whitespace."""
    text = unicodedata.normalize("NFC", text or "")
    for curly, straight in _QUOTES.items():
        text = text.replace(curly, straight)
    return _SPACES.sub(" ", text).strip()


def is_placeholder(text: str | None) -> bool:
    """True for blanks and stand-ins such as "N/A", "-", "unknown"."""
    return clean_text(text or "").casefold() in PLACEHOLDERS


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as Latin-1, even after lower-casing ("andrã©" -> "andré").

    WikiArt slugs were decoded as Latin-1 and then lower-cased, which turned the lead
    bytes 0xC2/0xC3 ("Â", "Ã") into 0xE2/0xE3 ("â", "ã"); those are put back first.
    Text without such characters is returned unchanged.
    """
    if not any("\u0080" <= ch <= "\u00ff" for ch in text):
        return text
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    repaired = re.sub(
        rb"[\xe2\xe3](?=[\x80-\xbf](?![\x80-\xbf]))",
        lambda m: bytes([m.group(0)[0] - 0x20]),
        raw,
    )
    return clean_text(repaired.decode("utf-8", errors="ignore"))


@functools.lru_cache(maxsize=1 << 17)
def ascii_fold(text: str) -> str:
    from unidecode import unidecode

    return unidecode(text)


def _top_level_commas(text: str) -> list[int]:
    depth = 0
    found = []
    for index, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0 and text[index + 1 : index + 2] == " ":
            found.append(index)
    return found


def invert_name(text: str) -> str:
    """"Last, First" -> "First Last"; "George Barret, Jr." keeps "Jr." as a suffix.

    Commas inside parentheses ("Moebius (Giraud, Jean)") are not inversions.
    """
    text = clean_text(text)
    commas = _top_level_commas(text)
    if not commas:
        return text
    parts = []
    previous = 0
    for index in commas:
        parts.append(text[previous:index].strip())
        previous = index + 2
    parts.append(text[previous:].strip())
    suffix = ""
    if len(parts) > 1 and _is_generational(parts[-1]):
        suffix = " " + parts.pop()
    if len(parts) == 1:
        return clean_text(parts[0] + suffix)
    last, first = parts[0], " ".join(parts[1:])
    return clean_text(f"{first} {last}{suffix}")


def _is_generational(token: str) -> bool:
    return token.strip(" .").casefold() in GENERATIONAL or bool(re.fullmatch(r"[IVX]+\.?", token.strip()))


@functools.lru_cache(maxsize=1 << 17)
def name_key(text: str) -> str:
    """The matching key of a name: ASCII, lower case, no punctuation, initials joined.

    "J.M.W. Turner", "J. M. W. Turner" and "jmw turner" all give "jmw turner";
    "Salvador Dalí" and "salvador dali" give "salvador dali"; a leading "the" is dropped
    ("the Brothers Hildebrandt"), and so is a title ("Sir Alfred Munnings").
    """
    text = ascii_fold(clean_text(text)).casefold()
    text = text.replace("&", " and ")
    text = re.sub(r"['`\"]", "", text)
    text = re.sub(r"[^a-z0-9]+", " ", text)
    joined: list[str] = []
    run = False  # is the last token a run of joined initials ("j", "jm", "jmw")?
    for token in text.split():
        single = len(token) == 1 and token.isalpha()
        if single and run:
            joined[-1] += token
        else:
            joined.append(token)
            run = single
    if len(joined) > 1 and joined[0] == "the":
        joined = joined[1:]
    # "Sir William Russell Flint" is William Russell Flint
    while len(joined) > 2 and joined[0] in HONORIFICS:
        joined = joined[1:]
    return " ".join(joined)


@functools.lru_cache(maxsize=1 << 17)
def slugify(text: str) -> str:
    """ASCII slug: "Claude Monet" -> "claude-monet", "J.M.W. Turner" -> "j-m-w-turner"."""
    text = ascii_fold(clean_text(text)).lower()
    text = text.replace("&", " and ")
    text = re.sub(r"['`\"]", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def has_generational(key: str) -> bool:
    return any(key.endswith(" " + g) or f" {g} " in f" {key} " for g in GENERATIONAL)


@functools.lru_cache(maxsize=1 << 17)
def is_latin(text: str) -> bool:
    """True when every letter is Latin script (used to prefer "Arthur" over "Артур")."""
    for ch in text:
        if ch.isalpha():
            try:
                if not unicodedata.name(ch).startswith("LATIN"):
                    return False
            except ValueError:
                return False
    return True


def edit_distance_at_most_one(a: str, b: str) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = j = 0
    edits = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            i += 1
            j += 1
            continue
        edits += 1
        if edits > 1:
            return False
        if len(a) == len(b):
            i += 1
        j += 1
    return edits + (len(b) - j) + (len(a) - i) <= 1


@dataclass(frozen=True, slots=True)
class NameLink:
    """Another name carried by a name form, e.g. "Katsushika Hokusai" in "Hokusai (...)".

    ``confident`` links are kept as aliases even when no other source has that name;
    the others only serve to merge with a name some source does list.
    """

    name: str
    kind: str
    confident: bool


def _tokens(text: str) -> list[str]:
    return [t for t in text.split(" ") if t]


def expand_name(text: str, first_names: frozenset[str] = frozenset()) -> tuple[str, list[NameLink]]:
    """Split a name form into its primary name and the other names it carries.

    Handles "X (Y)", "X (Last, First)", "First (Variant) Last", "Rembrandt (van Rijn)",
    'Mike "Beeple" Winkelmann', "Ilya/Ilja Repin" and "(the Elder)". ``first_names`` (given
    names seen in the sources, lower case) tells a first-name variant ("Alfons (Alphonse)
    Mucha") from a pseudonym ("Ross (RossDraws) Tran").
    """
    text = clean_text(text)
    links: list[NameLink] = []
    suffix = ""
    # generational parentheses become a plain suffix
    def _gen(match: re.Match[str]) -> str:
        nonlocal suffix
        suffix = " the " + match.group(2).capitalize()
        return " "

    text = re.sub(r"\(\s*(the\s+)?(elder|younger)\s*\)", _gen, text, flags=re.IGNORECASE)
    parts = re.split(r'(\([^()]*\)|"[^"]*")', text)
    base_tokens: list[str] = []
    inserts: list[tuple[int, str]] = []
    for part in parts:
        if not part:
            continue
        if (part.startswith("(") and part.endswith(")")) or (part.startswith('"') and part.endswith('"') and len(part) > 1):
            inner = clean_text(part[1:-1])
            if inner:
                inserts.append((len(base_tokens), inner))
        else:
            base_tokens.extend(_tokens(clean_text(part)))
    primary = clean_text(" ".join(base_tokens) + suffix)
    initial = re.compile(r"[A-Z]\.?")
    for position, inner in inserts:
        inner_tokens = _tokens(inner.replace("/", " "))
        if ", " in inner:
            links.append(NameLink(invert_name(inner), "paren-inverted", True))
            continue
        at_end = position >= len(base_tokens)
        at_start = position == 0
        if inner_tokens[0].lower() in PARTICLES and inner_tokens[0][0].islower():
            merged = base_tokens[:position] + inner_tokens + base_tokens[position:]
            links.append(NameLink(clean_text(" ".join(merged) + suffix), "paren-particle", True))
            continue
        if at_end or not base_tokens:
            # "Hokusai (Katsushika Hokusai)", "Hervé Groussin (Nuro)": another name
            links.append(NameLink(inner, "paren-name", True))
            continue
        if at_start:
            # "(Android) Andrew Jones": a nickname in place of the first name
            replaced = inner_tokens + base_tokens[1:]
            links.append(NameLink(clean_text(" ".join(replaced) + suffix), "paren-replace", False))
            links.append(NameLink(inner, "paren-name", False))
            continue
        # in the middle: a first-name variant, an expansion of initials, or a pseudonym
        start = position - 1
        while start > 0 and initial.fullmatch(base_tokens[start - 1]) and initial.fullmatch(base_tokens[start]):
            start -= 1
        replaced = clean_text(" ".join(base_tokens[:start] + inner_tokens + base_tokens[position:]) + suffix)
        initials = all(initial.fullmatch(t) for t in base_tokens[start:position])
        variant = len(inner_tokens) == 1 and inner_tokens[0].casefold() in first_names
        if initials or variant:
            links.append(NameLink(replaced, "paren-variant", True))
        else:
            # "Ross (RossDraws) Tran", "Josan (Death Burger) Gonzalez": a pseudonym
            links.append(NameLink(inner, "paren-name", True))
            links.append(NameLink(replaced, "paren-variant", False))
    # "Ilya/Ilja Repin": one alternative per spelling
    if "/" in primary:
        tokens = _tokens(primary)
        for index, token in enumerate(tokens):
            if "/" in token:
                options = [o for o in token.split("/") if o]
                if options:
                    primary = clean_text(" ".join(tokens[:index] + [options[0]] + tokens[index + 1 :]))
                    for option in options[1:]:
                        links.append(
                            NameLink(clean_text(" ".join(tokens[:index] + [option] + tokens[index + 1 :])), "slash", True)
                        )
                break
    return primary, links
