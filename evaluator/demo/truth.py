"""The planted truth of the world demo, and how much of it the store's verdicts recover.

The world demo plants its answers: ``ft-learns`` is a LoRA trained on an artist the base
never saw (gained for that artist), ``ft-forgets`` a LoRA that paints another artist's
works for one known artist's name (lost for that artist); every other artist is kept.
``planted_cells`` lists one expectation per (fine-tune, artist, reference metric);
``measure_truth`` reads the verdicts from the store's own ``comparisons`` table, and
``write_truth_csv`` writes ``DIR/demo-truth.csv`` (``finetune, artist_id, metric,
expected, measured``). A cell the store has no verdict for is ``missing``, never a match.

Reads the store read-only; writes only the CSV (atomically).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The metrics computed against reference works: they say whether a fine-tune paints an
# artist's style, which the planted truth is about (text-side metrics are structural here).
REFERENCE_METRICS = ("reference_similarity", "prototype_top1", "retrieval_map@1")
TRUTH_COLUMNS = ("finetune", "artist_id", "metric", "expected", "measured")


@dataclass(frozen=True)
class Planted:
    """What a fine-tune was made to do: gain ``gained`` and lose ``lost`` (artist ids)."""

    finetune: str
    gained: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()

    def expected(self, artist_id: str) -> str:
        if artist_id in self.gained:
            return "gained"
        return "lost" if artist_id in self.lost else "kept"


@dataclass(frozen=True)
class TruthCell:
    finetune: str
    artist_id: str
    metric: str
    expected: str
    measured: str

    @property
    def matches(self) -> bool:
        return self.expected == self.measured


def planted_cells(plants: list[Planted], artist_ids: list[str],
                  metrics: tuple[str, ...] = REFERENCE_METRICS) -> list[tuple[str, str, str, str]]:
    """(finetune, artist_id, metric, expected) for every fine-tune, artist and metric."""
    return [(p.finetune, a, m, p.expected(a)) for p in plants for a in artist_ids for m in metrics]


def measure_truth(store: str | Path, base: str, plants: list[Planted], artist_ids: list[str],
                  metrics: tuple[str, ...] = REFERENCE_METRICS) -> list[TruthCell]:
    """Each planted cell with the verdict the store's ``comparisons`` holds (``missing`` when none)."""
    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(store)
    try:
        rows = con.execute(
            "SELECT finetune, artist_id, metric, verdict FROM comparisons WHERE base = ?", [base]
        ).fetchall()
    finally:
        con.close()
    verdicts = {(f, a, m): v or "undecided" for f, a, m, v in rows}
    return [TruthCell(f, a, m, e, verdicts.get((f, a, m), "missing"))
            for f, a, m, e in planted_cells(plants, artist_ids, metrics)]


def write_truth_csv(cells: list[TruthCell], path: Path) -> Path:
    """``demo-truth.csv``: one row per planted cell, written whole or not at all."""
    import csv
    import io

    from catalog.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    writer.writerows((c.finetune, c.artist_id, c.metric, c.expected, c.measured) for c in cells)
    atomic_write_text(path, buffer.getvalue())
    return path


def format_truth(cells: list[TruthCell]) -> list[str]:
    """"planted truth: N of M cells match", then every cell that does not."""
    matched = sum(c.matches for c in cells)
    lines = [f"planted truth: {matched} of {len(cells)} cells match"]
    lines += [f"  {c.finetune} / {c.artist_id} / {c.metric}: expected {c.expected}, measured {c.measured}"
              for c in cells if not c.matches]
    return lines
