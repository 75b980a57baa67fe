"""What the builder passes between its steps: a ``Record`` per source line, the lines
it dropped, and the ``BuildReport`` that ``atelier catalog build`` prints.

Reads and writes nothing (``catalog.build.build_styles_csv`` writes the report file).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from catalog.build.rules import SOURCES
from catalog.names import NameLink


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
    # Danbooru (catalog.build.danbooru): what was read, every refused tag merge, franchises
    danbooru: str = ""  # "" until read; else what happened ("read N lines" / "not found")
    danbooru_tags: dict[str, int] = field(default_factory=dict)  # kind -> tags at >= min posts
    tag_refused: list[str] = field(default_factory=list)
    franchises: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # kind -> rows written

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds.items()))
        lines = [f"rows: {self.artists}" + (f" ({kinds})" if kinds else "")]
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
        if self.danbooru:
            tags = ", ".join(f"{kind} {count}" for kind, count in sorted(self.danbooru_tags.items()))
            lines.append(f"danbooru: {self.danbooru}" + (f"; tags kept: {tags}" if tags else ""))
            lines.append(f"  {sum(v for k, v in self.merges.items() if k.startswith('tag:'))} tag(s) merged with "
                         f"catalog artists, {len(self.tag_refused)} merge(s) refused (listed by --report), "
                         f"{self.franchises} character(s) with a franchise")
        lines.append(f"slug collisions disambiguated: {self.slug_collisions}")
        lines.append(f"build time: {self.seconds:.2f} s")
        return "\n".join(lines)

    def details(self) -> str:
        """The summary plus every heuristic and tag merge, and every refused tag merge (for --report)."""
        return (self.summary() + "\nmerges by heuristic, link and tag:\n"
                + "\n".join(f"  {line}" for line in self.merge_log)
                + f"\nrefused tag merges: {len(self.tag_refused)}\n"
                + "\n".join(f"  {line}" for line in self.tag_refused))
