"""What a scoring run's numbers cannot say, as lines `atelier score` prints.

Reads the score tables of one run (``aggregate.ScoreTables``) and its metric inputs;
writes nothing. A verdict without an interval is ``undecided`` and a metric without
what it needs is NULL: both are in the store with their reason, and these lines say
how many there are, why, and what to do about it, so none passes unnoticed.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluator.scoring.aggregate import ScoreTables
    from evaluator.scoring.metrics import EvalInputs

SEED_HINT = ("give imported images their seeds (a `seed` column in the labels CSV, or `atelier import "
             "--seed-from-filename REGEX`), or generate with 2 or more seeds")
BASELINE_HINT = ("generate them (`atelier catalog plan --templates style,null ...` then `atelier generate`) "
                 "or import them (labels CSV rows with template = null and an empty artist)")


def _counted(reasons) -> str:
    return "; ".join(f"{why}: {n}" for why, n in sorted(Counter(reasons).items()))


def comparison_notices(tables: ScoreTables) -> list[str]:
    """Undecided comparisons (how many, why) and those decided over images."""
    cmp = tables.comparisons
    if cmp is None or cmp.empty:
        return []
    lines = []
    undecided = cmp[cmp["verdict"] == "undecided"]
    if len(undecided):
        lines.append(f"warning: {len(undecided)} of {len(cmp)} comparisons are undecided, no interval "
                     f"({_counted(undecided['verdict_reason'])}); {SEED_HINT}")
    over_images = cmp[(cmp["ci_over"] != "seeds") & (cmp["verdict"] != "undecided")]
    if len(over_images):
        lines.append(f"note: {len(over_images)} of {len(cmp)} comparisons bootstrap over images, not seeds "
                     "(no seed known: images of one seed are not independent, so these intervals may be too narrow)")
    return lines


def artist_notices(tables: ScoreTables) -> list[str]:
    """`recognized` left NULL for want of a margin interval."""
    frame = tables.artist_metrics.get("recognized")
    if frame is None or frame.empty:
        return []
    null = frame[frame["value"].isna()]
    if null.empty:
        return []
    return [f"warning: recognized is NULL (undecided) for {len(null)} of {len(frame)} (checkpoint, artist) "
            f"({_counted(null['reason'])}); {SEED_HINT}"]


def checkpoint_notices(tables: ScoreTables) -> list[str]:
    """Checkpoint metrics left NULL (an AUC with too few labelled artists of a class)."""
    ck = tables.checkpoint_scores
    if ck is None or ck.empty:
        return []
    null = ck[ck["value"].isna() & ck["reason"].notna() & ck["metric"].str.startswith("recognized_auc")]
    lines = []  # one line per metric and reason, naming every checkpoint it holds for
    for (metric, reason), group in null.groupby(["metric", "reason"], sort=True):
        lines.append(f"warning: {metric} is NULL for {', '.join(sorted(group['checkpoint']))}: {reason}")
    return lines


def baseline_notices(inputs: EvalInputs) -> list[str]:
    """Checkpoints whose recognition metrics are missing because they have no baseline images."""
    from evaluator.scoring.metrics import missing_baselines

    lacking = missing_baselines(inputs)
    if not lacking:
        return []
    return [f"warning: no baseline (no-artist, `null` template) images for {len(lacking)} checkpoint(s): "
            f"{', '.join(lacking)}; recognition_margin, recognized and recognized_auc_* are not computed for "
            f"them; {BASELINE_HINT}"]


REFERENCE_HINT = "add reference works with `atelier references add` or `atelier import --reference`"


def reference_notices(inputs: EvalInputs, tables: ScoreTables) -> list[str]:
    """Metrics that need reference works and had none (or too few artists with them),
    and artists whose reference works this encoder cannot tell apart."""
    from evaluator.scoring.metrics import MIN_PROTOTYPE_CLASSES, list_metrics

    needing = [m.name for m in list_metrics() if m.needs_references]
    if not inputs.has_references():
        return [f"note: no reference works, so {', '.join(needing)} are not computed; {REFERENCE_HINT}"]
    lines = []
    n_classes = len(inputs.prototypes())
    if n_classes < MIN_PROTOTYPE_CLASSES:
        lines.append(f"warning: prototype_top1, prototype_top5 and prototype_mrr need reference works of "
                     f"{MIN_PROTOTYPE_CLASSES}+ artists but {n_classes} has them; {REFERENCE_HINT}")
    gap = tables.artist_metrics.get("discrimination_gap")
    if gap is not None and not gap.empty:
        per_artist = gap.drop_duplicates("artist_id")
        below = per_artist[per_artist["ci_high"] < 0]
        if len(below):
            lines.append(f"warning: discrimination_gap < 0 (95% CI) for {len(below)} of {len(per_artist)} artists "
                         f"with references ({', '.join(below['artist_id'].head(5))}"
                         f"{', ...' if len(below) > 5 else ''}): this encoder cannot tell their works apart, so "
                         "their reference metrics say little")
    return lines


def score_warnings(inputs: EvalInputs, tables: ScoreTables) -> list[str]:
    """Every notice of one run, most consequential first."""
    return [*comparison_notices(tables), *artist_notices(tables), *checkpoint_notices(tables),
            *baseline_notices(inputs), *reference_notices(inputs, tables)]
