"""The plan: every work unit (one image) of a run, in a deterministic order.

Order: checkpoint (as given) > template (as given) > artist (as given; selections come
sorted by artist_id) > seed (as given). Checkpoint-major order lets a generator load each
checkpoint once; ``catalog.units.shard`` interleaves units over ranks.

A baseline template (no ``{name}``, e.g. ``null``) yields one unit per (checkpoint, seed)
with ``artist_id = BASELINE_ARTIST_ID``, placed after that checkpoint's artist units of
the same template position.

Each other template is paired with the selected rows of its ``kinds`` (artist templates
with artists, ``character`` templates with characters); a template none of whose rows
is selected is refused, and a ``{tag}`` template refuses a row without a tag, naming it.

Plans are written as Parquet (``.parquet``) or JSON lines (``.jsonl``), atomically, with
the unit's fields plus ``unit_id`` and ``image_id``. ``read_plan`` recomputes every id
and refuses a file whose stored ids do not match (an edited or corrupted plan).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from catalog.atomic import atomic_path, atomic_write_text
from catalog.model import Artist
from catalog.templates import Template, get_templates
from catalog.units import BASELINE_ARTIST_ID, WorkUnit
from evaluator.errors import InputError

# No leading dot: "." and ".." would climb out of DIR/images/ (names become folders).
# as evaluator.generation.checkpoints.NAME_PATTERN: a training step may end in @step-NNNNNN
CHECKPOINT_NAME_PATTERN = re.compile(r"^(?!\.)[A-Za-z0-9._-]+(@step-[0-9]{6})?$")
MAX_SEED = 2**63 - 1  # seeds are stored as int64 (Parquet, DuckDB)
PLAN_COLUMNS = [f.name for f in fields(WorkUnit)] + ["unit_id", "image_id"]


class PlanError(InputError):
    """Bad plan settings or a plan file that cannot be trusted."""


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Generation settings shared by every unit of a plan."""

    # 512 is SD 1.5's native size and small enough for CPU smoke runs; SDXL users pass 1024.
    width: int = 512
    height: int = 512
    # 25 steps: where the default schedulers' images stop changing visibly (diffusers docs
    # use 25-50); fewer is blurry, more costs time for little.
    steps: int = 25
    # 7.5: the classifier-free guidance of the original SD releases and diffusers' default.
    guidance: float = 7.5
    # "default" means the checkpoint's own scheduler, so two checkpoints are each run as
    # their authors intended; name one (e.g. "euler") to force the same for all.
    scheduler: str = "default"
    negative_prompt: str = ""

    def validate(self) -> None:
        """Raise PlanError on the first unusable setting, with an exact message."""
        for label, value in (("width", self.width), ("height", self.height)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise PlanError(f"{label} must be a positive integer but is {value!r}")
            if value % 8:
                raise PlanError(f"{label} must be divisible by 8 but is {value}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise PlanError(f"steps must be an integer >= 1 but is {self.steps!r}")
        if not isinstance(self.guidance, int | float) or isinstance(self.guidance, bool):
            raise PlanError(f"guidance must be a number but is {self.guidance!r}")
        if not (self.guidance >= 0) or self.guidance == float("inf"):
            raise PlanError(f"guidance must be a finite number >= 0 but is {self.guidance}")
        if not self.scheduler or not re.match(r"^[A-Za-z0-9._-]+$", self.scheduler):
            raise PlanError(f"scheduler must be a name like 'default' or 'euler' but is {self.scheduler!r}")
        if not isinstance(self.negative_prompt, str):
            raise PlanError(f"negative_prompt must be a string but is {self.negative_prompt!r}")


def seed_ranges(text: str) -> list[range]:
    """``"0,1"`` / ``"0-3"`` / ``"0-3,10"`` as ranges, not expanded (``0-99999999`` is
    100 million seeds: count them before making a list of them)."""
    ranges: list[range] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if high < low:
                raise PlanError(f"seed range {part!r} runs backwards")
            ranges.append(range(low, high + 1))
        elif re.fullmatch(r"\d+", part):
            ranges.append(range(int(part), int(part) + 1))
        else:
            raise PlanError(f"seeds must be integers or ranges like 0-3 but got {part!r}")
    if not ranges:
        raise PlanError(f"no seeds in {text!r}")
    return ranges


def parse_seeds(text: str) -> list[int]:
    """``"0,1"`` / ``"0-3"`` / ``"0-3,10"`` to a list of seeds (order kept; make_plan refuses repeats)."""
    return [seed for part in seed_ranges(text) for seed in part]


# A plan above this many units is refused unless confirmed (`atelier plan --yes`): a
# million units is ~1 GB while planned and days of generation; a typo such as
# --seeds 0-99999999 (3 billion units over 30,000 artists) should say so, not swap.
CONFIRM_UNITS = 1_000_000


def estimate_units(artists: Sequence[Artist], templates: dict[str, Template], template_names: Sequence[str] | str,
                   seeds_text: str, checkpoints: Sequence[str]) -> int:
    """How many units ``make_plan`` would make, without making them: per checkpoint and
    seed, one per baseline template and one per (template, row of its kinds)."""
    chosen = get_templates(templates, template_names if isinstance(template_names, str) else list(template_names))
    n_seeds = sum(len(r) for r in seed_ranges(seeds_text))
    targets = sum(1 if t.is_baseline else sum(1 for a in artists if a.kind in t.kinds) for t in chosen)
    return len(checkpoints) * targets * n_seeds


def _check_inputs(
    artists: Sequence[Artist], seeds: Sequence[int], checkpoints: Sequence[str]
) -> None:
    if not checkpoints:
        raise PlanError("at least one checkpoint is needed")
    for name in checkpoints:
        if not isinstance(name, str) or not CHECKPOINT_NAME_PATTERN.match(name):
            raise PlanError(f"checkpoint name must match [A-Za-z0-9._-]+ and not start with '.' but is {name!r}")
    if len(set(checkpoints)) != len(checkpoints):
        raise PlanError(f"checkpoint names repeat: {list(checkpoints)}")
    if not seeds:
        raise PlanError("at least one seed is needed")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise PlanError(f"seed must be an integer in [0, 2**63) but is {seed!r}")
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"seeds repeat: {list(seeds)}")
    ids = [a.artist_id for a in artists]
    if len(set(ids)) != len(ids):
        raise PlanError("artists repeat in the selection")
    if BASELINE_ARTIST_ID in ids:
        raise PlanError(f"artist_id {BASELINE_ARTIST_ID!r} is reserved for baseline units")


def make_plan(
    artists: Sequence[Artist],
    templates: dict[str, Template],
    template_names: Sequence[str] | str,
    seeds: Sequence[int],
    checkpoints: Sequence[str],
    *,
    width: int = 512,
    height: int = 512,
    steps: int = 25,
    guidance: float = 7.5,
    scheduler: str = "default",
    negative_prompt: str = "",
) -> list[WorkUnit]:
    """Every work unit of the run, in the deterministic order described above.

    The generation settings (``width`` ... ``negative_prompt``, see ``GenerationSettings``)
    are keyword-only, so a call reads as what it sets.
    """
    settings = GenerationSettings(width, height, steps, guidance, scheduler, negative_prompt)
    settings.validate()
    chosen = get_templates(templates, template_names if isinstance(template_names, str) else list(template_names))
    if not chosen:
        raise PlanError("at least one template is needed")
    seeds = list(seeds)
    _check_inputs(artists, seeds, checkpoints)
    if not artists and not all(t.is_baseline for t in chosen):
        raise PlanError("the selection has no artists")
    targets_of = {t.name: _targets(t, artists) for t in chosen}
    units: list[WorkUnit] = []
    for checkpoint in checkpoints:
        for template in chosen:
            for artist_id, prompt in targets_of[template.name]:
                for seed in seeds:
                    units.append(
                        WorkUnit(
                            checkpoint=checkpoint,
                            artist_id=artist_id,
                            template=template.name,
                            prompt=prompt,
                            negative_prompt=settings.negative_prompt,
                            seed=seed,
                            width=settings.width,
                            height=settings.height,
                            steps=settings.steps,
                            guidance=float(settings.guidance),
                            scheduler=settings.scheduler,
                        )
                    )
    return units


def _targets(template: Template, artists: Sequence[Artist]) -> list[tuple[str, str]]:
    """(artist_id, prompt) of each row the template is for (the baseline: one, no artist)."""
    if template.is_baseline:
        return [(BASELINE_ARTIST_ID, template.render())]
    rows = [a for a in artists if a.kind in template.kinds]
    if not rows:
        kinds = ", ".join(sorted({a.kind for a in artists}))
        raise PlanError(f"template {template.name!r} is for {' and '.join(template.kinds)} rows, but the "
                        f"selection has only {kinds} rows; select --kind {template.kinds[0]} or another template")
    if template.needs_tag:
        untagged = [a for a in rows if not a.tag]
        if untagged:
            first = untagged[0]
            more = f" (and {len(untagged) - 1} more)" if len(untagged) > 1 else ""
            raise PlanError(f"template {template.name!r} needs {{tag}} but catalog row {first.artist_id!r} "
                            f"({first.name}) has no Danbooru tag{more}; select rows with one (--min-posts 0) "
                            "or use a {name} template")
    return [(a.artist_id, template.render_row(a)) for a in rows]


def _records(units: Sequence[WorkUnit]) -> list[dict]:
    return [unit.to_dict() for unit in units]


def write_plan(units: Sequence[WorkUnit], path: str | os.PathLike[str]) -> Path:
    """Write the plan atomically as ``.parquet`` or ``.jsonl`` (by the file's suffix)."""
    target = Path(path)
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise PlanError("the plan has duplicate units")
    suffix = target.suffix.lower()
    if suffix == ".jsonl":
        lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in _records(units)]
        atomic_write_text(target, "".join(line + "\n" for line in lines))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("checkpoint", pa.string()),
                ("artist_id", pa.string()),
                ("template", pa.string()),
                ("prompt", pa.string()),
                ("negative_prompt", pa.string()),
                ("seed", pa.int64()),
                ("width", pa.int32()),
                ("height", pa.int32()),
                ("steps", pa.int32()),
                ("guidance", pa.float64()),
                ("scheduler", pa.string()),
                ("unit_id", pa.string()),
                ("image_id", pa.int64()),
            ]
        )
        records = _records(units)
        table = pa.Table.from_pylist(records, schema=schema) if records else schema.empty_table()
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
    else:
        raise PlanError(f"plan file must end in .parquet or .jsonl but is {target.name!r}")
    return target


def read_plan(path: str | os.PathLike[str]) -> list[WorkUnit]:
    """Read a plan and check every stored unit_id against the recomputed one."""
    source = Path(path)
    if not source.exists():
        raise PlanError(f"plan file {source} not found")
    suffix = source.suffix.lower()
    records: list[tuple[int, dict]] = []
    if suffix == ".jsonl":
        with open(source, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise PlanError(f"{source}:{number}: not valid JSON: {exc}") from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        missing = [c for c in PLAN_COLUMNS if c not in table.column_names]
        if missing:
            raise PlanError(f"{source}: missing column(s) {missing}")
        records = [(i + 1, r) for i, r in enumerate(table.to_pylist())]
    else:
        raise PlanError(f"plan file must end in .parquet or .jsonl but is {source.name!r}")
    units: list[WorkUnit] = []
    for number, record in records:
        where = f"{source}:{'line' if suffix == '.jsonl' else 'row'} {number}"
        try:
            unit = WorkUnit.from_dict(record)
        except (KeyError, TypeError) as exc:
            raise PlanError(f"{where}: not a work unit ({exc})") from None
        stored = record.get("unit_id")
        if stored != unit.unit_id:
            raise PlanError(
                f"{where}: stored unit_id {stored!r} does not match the unit's fields "
                f"(recomputed {unit.unit_id!r}); the plan was edited or corrupted"
            )
        units.append(unit)
    return units


def plan_summary(units: Sequence[WorkUnit]) -> dict[str, int]:
    """Counts for the CLI: units, checkpoints, artists, templates, seeds, baseline units."""
    return {
        "units": len(units),
        "checkpoints": len({u.checkpoint for u in units}),
        "artists": len({u.artist_id for u in units if u.artist_id != BASELINE_ARTIST_ID}),
        "templates": len({u.template for u in units}),
        "seeds": len({u.seed for u in units}),
        "baseline_units": sum(u.artist_id == BASELINE_ARTIST_ID for u in units),
    }
