"""Merging records into artists: same names, links between names, then name-form heuristics.

Reads and writes nothing: it groups the ``Record`` list of ``catalog.build.sources`` and
counts every merge and refusal in the ``BuildReport``. The passes are described in the
``catalog.build`` docstring; each heuristic below is one short function that *plans*
merges on one snapshot of the groups, and ``merge_by_name_form`` applies the plan.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from catalog.build.records import BuildReport, Record
from catalog.build.rules import DISTINCT_PEOPLE, NOTE_LINK_KINDS, REJECTED_LINKS, SHORTHAND_SOURCES
from catalog.names import (
    PARTICLES,
    clean_text,
    edit_distance_at_most_one,
    has_generational,
    name_key,
)

# (root, other root, kind, why) of a merge a heuristic proposes.
Planned = tuple[int, int, str, str]


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
        if kind != "same-name":  # equal names need no review; every other merge is listed
            self.report.merge_log.append(f"{kind}: {names}{' (' + why + ')' if why else ''}")
        return True

    def roots(self) -> dict[int, list[int]]:
        members: dict[int, list[int]] = defaultdict(list)
        for index in range(len(self.records)):
            members[self.find(index)].append(index)
        return members


def merge_records(records: list[Record], report: BuildReport) -> list[list[Record]]:
    """Group records into artists (see the ``catalog.build`` docstring for the passes)."""
    groups = Groups(records, report)
    by_key: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_key[record.key].append(index)
    merge_same_names(groups, by_key)
    drop_rejected_links(records, report)
    merge_links(records, groups, by_key, report)
    merge_by_name_form(records, groups)
    members = groups.roots()
    return [[records[i] for i in sorted(idx)] for _, idx in sorted(members.items())]


def merge_same_names(groups: Groups, by_key: dict[str, list[int]]) -> None:
    """Pass 1: records with the same key are the same name written alike.

    Years are not checked: equal names that disagree on a year are, in these lists, one
    artist with a slip in one source (Lyonel Feininger died 1953 vs 1956); the
    disagreement is written to the notes.
    """
    for key in sorted(by_key):
        indices = by_key[key]
        for index in indices[1:]:
            groups.union(indices[0], index, "same-name", check_years=False)


def drop_rejected_links(records: list[Record], report: BuildReport) -> None:
    """Remove the links of ``REJECTED_LINKS`` (reviewed as wrong), each reported as refused."""
    for record in records:
        kept = []
        for link in record.links:
            rejected = REJECTED_LINKS.get((record.key, name_key(link.name)))
            if rejected:
                report.refused.append(f"link: {record.name!r} -> {link.name!r}: {rejected}")
            else:
                kept.append(link)
        record.links = kept


def _link_claims(records: list[Record], groups: Groups) -> dict[str, set[int]]:
    """Link key -> the groups that give it as another name of theirs."""
    claims: dict[str, set[int]] = defaultdict(set)
    for index, record in enumerate(records):
        for link in record.links:
            link_key = name_key(link.name)
            if link_key and link_key != record.key:
                claims[link_key].add(groups.find(index))
    return claims


def merge_links(
    records: list[Record], groups: Groups, by_key: dict[str, list[int]], report: BuildReport
) -> None:
    """Pass 2: another name given on a line joins the record that some source lists by it.

    Refused when two different artists claim the name (and its owner is neither). A name
    written on the same line (parentheses, the cheat sheet's own prompt) is the line's own
    statement of identity; a note ("AKA ...") may belong to the wrong row, so its years
    must agree.
    """
    claims = _link_claims(records, groups)
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
            groups.union(
                index,
                by_key[link_key][0],
                "link",
                check_years=link.kind in NOTE_LINK_KINDS,
                why=f"{record.source}:{record.line} {link.kind}",
            )


# ---------------------------------------------------------------------------- name forms


def merge_by_name_form(records: list[Record], groups: Groups) -> None:
    """Pass 3: initials, surname-only, middle-name, spelling, spacing and word-order merges.

    Every candidate is judged on one snapshot of the groups and must be the only fit on
    both sides, so the outcome does not depend on the order merges are tried in and a
    short name ("Alexander Calder") is not merged with two longer ones (his father and
    grandfather).
    """
    snapshot = _Snapshot(records, groups)
    planned = [merge for root in sorted(snapshot.members) for merge in _plan_for_root(snapshot, root)]
    planned += _plan_same_letters(snapshot)
    planned += _plan_surname_spelling(snapshot)
    seen: set[tuple[int, int]] = set()
    for a, b, kind, why in planned:
        pair = (min(a, b), max(a, b))
        if pair in seen:
            continue
        seen.add(pair)
        groups.union(a, b, kind, why=why)


class _Snapshot:
    """The groups before any name-form merge, with each group's (given names, surname)."""

    def __init__(self, records: list[Record], groups: Groups) -> None:
        self.records = records
        self.groups = groups
        self.members = groups.roots()
        # surname -> groups with a name of that surname and some given name
        self.surname_index: dict[str, set[int]] = defaultdict(set)
        self.info: dict[int, list[tuple[list[str], str]]] = {}
        for root, indices in self.members.items():
            parsed: list[tuple[list[str], str]] = []
            for name in sorted({records[i].name for i in indices}):
                parts = _name_parts(name)
                if parts is None:
                    continue
                if parts not in parsed:
                    parsed.append(parts)
                if parts[0]:
                    self.surname_index[parts[1]].add(root)
            self.info[root] = parsed

    def died(self, root: int) -> set[int]:
        return self.groups.died[self.groups.find(root)]

    def same_death(self, a: int, b: int) -> bool:
        """Both groups have a known death year, and two of them are at most a year apart."""
        died_a, died_b = self.died(a), self.died(b)
        return bool(died_a) and bool(died_b) and any(abs(x - y) <= 1 for x in died_a for y in died_b)

    def fits(self, root: int, rule: Callable[[list[str], list[str]], bool]) -> list[int]:
        """Other groups with a name of the same surname whose given names fit ``rule``."""
        out: list[int] = []
        for given, surname in self.info[root]:
            for c in self.surname_index.get(surname, set()) - {root}:
                if any(s == surname and rule(given, g) for g, s in self.info[c]) and c not in out:
                    out.append(c)
        return sorted(out)

    def one_list(self, a: int, b: int) -> bool:
        """Do the two groups come from one and the same source list?"""
        return _same_single_source(self.records, self.members[a], self.members[b])


def _plan_for_root(snapshot: _Snapshot, root: int) -> list[Planned]:
    """The heuristics that start from one group, in the order they are applied."""
    parsed = snapshot.info[root]
    if not parsed:
        return []
    with_given = [p for p in parsed if p[0]]
    if not with_given:
        return _plan_surname_only(snapshot, root, parsed)
    planned: list[Planned] = []
    for given, surname in with_given:
        planned += _plan_initials(snapshot, root, given, surname)
    return planned + _plan_given_name_variants(snapshot, root)


def _plan_surname_only(snapshot: _Snapshot, root: int, parsed: list[tuple[list[str], str]]) -> list[Planned]:
    """``surname``: a bare "Monet" or "Van Gogh" is the one artist of that surname.

    Taken as shorthand from the lists that write it so; from a curated sheet only with
    the same death year ("Raphael" may be a deliberate single name).
    """
    sources = {snapshot.records[i].source for i in snapshot.members[root]}
    planned: list[Planned] = []
    for _, surname in parsed:
        candidates = sorted(snapshot.surname_index.get(surname, set()) - {root})
        chosen = _dominant(candidates, snapshot.members, snapshot.records)
        if chosen is not None and (sources <= SHORTHAND_SOURCES or snapshot.same_death(root, chosen)):
            planned.append((root, chosen, "surname", surname))
    return planned


def _plan_initials(snapshot: _Snapshot, root: int, given: list[str], surname: str) -> list[Planned]:
    """``initials``: "J. M. W. Turner" = "Joseph Mallord William Turner" (the only fit);
    ``initials+year``: "William Turner" with J. M. W. Turner's death year."""
    if len(given) != 1 or not _looks_initials(snapshot.records, snapshot.members[root], given[0]):
        return []
    letters = given[0]
    candidates = snapshot.surname_index.get(surname, set()) - {root}
    planned: list[Planned] = []
    exact = sorted(
        c for c in candidates
        if any(s == surname and g and _initials_of(g) == letters for g, s in snapshot.info[c])
    )
    if len(exact) == 1:
        planned.append((root, exact[0], "initials", f"{letters} {surname}"))
    for c in sorted(candidates):
        if snapshot.same_death(root, c) and any(
            s == surname and g and _subsequence(_initials_of(g), letters) for g, s in snapshot.info[c]
        ):
            planned.append((root, c, "initials+year", surname))
    return planned


def _initials_of(given: list[str]) -> str:
    return "".join(token[0] for token in given)


def _middle_name(a: list[str], b: list[str]) -> bool:
    """"Edwin Landseer" / "Edwin Henry Landseer": one list of given names fits the other."""
    return (
        bool(a) and bool(b) and a != b
        and _given_compatible(a, b)
        and any(len(x) > 1 and x in b for x in a)
    )


def _spelling_variant(a: list[str], b: list[str]) -> bool:
    """One given name spelled two ways: "Aleksey" / "Alexei", "Katsuchika" / "Katsushika"."""
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


def _same_initial(a: list[str], b: list[str]) -> bool:
    """Same first initial, other given names: "Jan" / "Johannes" (the rule adds the year)."""
    return bool(a) and bool(b) and a[0][0] == b[0][0] and a != b


@dataclass(frozen=True, slots=True)
class _GivenNameRule:
    kind: str
    matches: Callable[[list[str], list[str]], bool]
    # both groups must share a known death year ("Jan Vermeer" and "Johannes Vermeer",
    # both died 1675)
    needs_same_death: bool
    # refused when one list names both forms: that list means two people (Gavin / Gawen Hamilton)
    one_list_means_two: bool


GIVEN_NAME_RULES = (
    _GivenNameRule("middle-name", _middle_name, needs_same_death=False, one_list_means_two=True),
    _GivenNameRule("spelling", _spelling_variant, needs_same_death=False, one_list_means_two=True),
    _GivenNameRule("same-year", _same_initial, needs_same_death=True, one_list_means_two=False),
)


def _plan_given_name_variants(snapshot: _Snapshot, root: int) -> list[Planned]:
    """``middle-name``, ``spelling`` and ``same-year``: same surname, given names that fit."""
    planned: list[Planned] = []
    for rule in GIVEN_NAME_RULES:
        other = _only_fit_both_ways(snapshot, root, rule)
        if other is None or (rule.one_list_means_two and snapshot.one_list(root, other)):
            continue
        planned.append((root, other, rule.kind, ""))
    return planned


def _only_fit_both_ways(snapshot: _Snapshot, root: int, rule: _GivenNameRule) -> int | None:
    """The one group that fits ``root`` under ``rule`` when ``root`` is its one fit too."""

    def fits(start: int) -> list[int]:
        found = snapshot.fits(start, rule.matches)
        return [c for c in found if snapshot.same_death(start, c)] if rule.needs_same_death else found

    found = fits(root)
    if len(found) != 1:
        return None
    return found[0] if fits(found[0]) == [root] else None


# The same letters spaced differently ("Kerem Beyit" / "KeremBeyit"), or the same words in
# another order (family name first: "Hasui Kawase" / "Kawase Hasui").
SAME_LETTER_FOLDS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("spacing", lambda key: key.replace(" ", "")),
    ("word-order", lambda key: " ".join(sorted(key.split()))),
)


def _plan_same_letters(snapshot: _Snapshot) -> list[Planned]:
    """``spacing`` and ``word-order``: keys of 5+ letters equal once folded."""
    planned: list[Planned] = []
    for kind, fold in SAME_LETTER_FOLDS:
        buckets: dict[str, set[int]] = defaultdict(set)
        for root, indices in snapshot.members.items():
            for key in _group_keys(snapshot.records, indices):
                if len(key.replace(" ", "")) >= 5:
                    buckets[fold(key)].add(root)
        for folded, roots in sorted(buckets.items()):
            ordered = sorted(roots)
            for other in ordered[1:]:
                planned.append((ordered[0], other, kind, folded))
    return planned


def _plan_surname_spelling(snapshot: _Snapshot) -> list[Planned]:
    """``surname-spelling``: the same given names and a surname equal once folded.

    "Giovanni Paolo Panini" / "Pannini", "Alex Maleev" / "Maleew"; folded equality only,
    since one letter apart is often another person ("David Bailey" / "David Bailly").
    """
    folded_index: dict[tuple[str, str], set[int]] = defaultdict(set)
    for root, parsed in snapshot.info.items():
        for given, surname in parsed:
            if given and len(surname) >= 5:
                folded_index[(" ".join(given), _spelling_fold(surname.replace(" ", "")))].add(root)
    planned: list[Planned] = []
    for (given_text, folded), roots in sorted(folded_index.items()):
        if len(roots) == 2:
            a, b = sorted(roots)
            if not snapshot.one_list(a, b):
                planned.append((a, b, "surname-spelling", f"{given_text} {folded}"))
    return planned


# ---------------------------------------------------------------------------- helpers


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
