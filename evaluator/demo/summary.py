"""What a scored workdir concluded, per fine-tune: the closing table of `atelier demo`.

Reads the store's ``comparisons`` table (read-only) and nothing else; writes nothing.
The headline metric is the first of ``HEADLINE_METRICS`` the store has, because the
metrics against reference works say most about a style and the text-side ones are all
a store without references can offer. Every verdict is counted, ``undecided`` included:
a count that hides the undecided rows would read as "kept".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Most telling first: references beat the catalog's text, which beats nothing.
HEADLINE_METRICS = (
    "reference_similarity",
    "prototype_top1",
    "retrieval_map@1",
    "artist_similarity",
    "recognition_margin",
    "clip_score",
)
VERDICTS = ("gained", "lost", "kept", "undecided")


@dataclass(frozen=True)
class Change:
    """One artist whose verdict was gained or lost, with its delta and interval."""

    artist_id: str
    name: str
    delta: float
    ci_low: float | None
    ci_high: float | None


@dataclass
class FinetuneSummary:
    """The verdict counts of one (base, fine-tune) pair on its headline metric."""

    base: str
    finetune: str
    model: str
    metric: str
    counts: dict[str, int] = field(default_factory=dict)
    top_lost: list[Change] = field(default_factory=list)
    top_gained: list[Change] = field(default_factory=list)
    # kept although the interval excludes 0: real changes under the metric's min_effect
    under_min_effect: int = 0


def headline_metric(available: set[str]) -> str | None:
    """The most telling metric the store compared, or None when it compared none."""
    for metric in HEADLINE_METRICS:
        if metric in available:
            return metric
    return min(available) if available else None


def _changes(con, pair: tuple[str, str, str, str], verdict: str, top: int) -> list[Change]:
    order = "delta ASC" if verdict == "lost" else "delta DESC"
    rows = con.execute(
        f"""SELECT c.artist_id, coalesce(a.name, c.artist_id), c.delta, c.ci_low, c.ci_high
            FROM comparisons c LEFT JOIN artists a USING (artist_id)
            WHERE c.base = ? AND c.finetune = ? AND c.model = ? AND c.metric = ? AND c.verdict = ?
            ORDER BY {order}, c.artist_id LIMIT ?""",
        [*pair, verdict, top],
    ).fetchall()
    return [Change(*row) for row in rows]


def summarize_store(store: str | Path, top: int = 3) -> list[FinetuneSummary]:
    """One summary per (base, fine-tune, model) in the store's comparisons."""
    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(store)
    try:
        metrics_of: dict[tuple[str, str, str], set[str]] = {}
        for base, finetune, model, metric in con.execute(
            "SELECT DISTINCT base, finetune, model, metric FROM comparisons ORDER BY ALL"
        ).fetchall():
            metrics_of.setdefault((base, finetune, model), set()).add(metric)
        summaries = []
        for (base, finetune, model), metrics in metrics_of.items():
            metric = headline_metric(metrics)
            pair = (base, finetune, model, metric)
            counts = dict(con.execute(
                """SELECT coalesce(verdict, 'undecided'), count(*) FROM comparisons
                   WHERE base = ? AND finetune = ? AND model = ? AND metric = ? GROUP BY 1""",
                list(pair),
            ).fetchall())
            small = con.execute(
                """SELECT count(*) FROM comparisons WHERE base = ? AND finetune = ? AND model = ? AND metric = ?
                   AND verdict = 'kept' AND verdict_reason LIKE '%min_effect%'""", list(pair)).fetchone()[0]
            summaries.append(FinetuneSummary(
                base, finetune, model, metric,
                counts={verdict: int(counts.get(verdict, 0)) for verdict in VERDICTS},
                top_lost=_changes(con, pair, "lost", top),
                top_gained=_changes(con, pair, "gained", top),
                under_min_effect=int(small),
            ))
        return summaries
    finally:
        con.close()


def _interval(change: Change) -> str:
    if change.ci_low is None or change.ci_high is None:
        return "no CI"
    return f"CI [{change.ci_low:+.4f}, {change.ci_high:+.4f}]"


def format_summaries(summaries: list[FinetuneSummary]) -> list[str]:
    """Plain-text lines: a verdict table, then the top lost and gained artists per fine-tune."""
    if not summaries:
        return ["no comparisons in the store (a fine-tune needs `base = ...` in the checkpoints file)"]
    lines = [f"{'fine-tune':<24} {'metric':<22} " + " ".join(f"{v:>9}" for v in VERDICTS)]
    for s in summaries:
        label = f"{s.finetune} vs {s.base}"
        lines.append(f"{label:<24} {s.metric:<22} " + " ".join(f"{s.counts[v]:>9}" for v in VERDICTS))
    small = [s for s in summaries if s.under_min_effect]
    if small:
        lines.append("  kept includes real changes smaller than the metric's min_effect (verdict_reason says so): "
                     + ", ".join(f"{s.under_min_effect} of {s.finetune}" for s in small))
    for s in summaries:
        for title, changes in (("lost", s.top_lost), ("gained", s.top_gained)):
            if changes:
                lines.append(f"  {s.finetune}, top {title} on {s.metric}:")
                lines.extend(f"    {c.name} ({c.artist_id}): delta {c.delta:+.4f}, {_interval(c)}" for c in changes)
    return lines
