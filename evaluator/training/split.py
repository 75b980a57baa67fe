"""The training / validation split: decided per image by its content hash, never by order.

Reads the items (and, through ``curation_groups`` / ``previous_split``, the workdir's
store); writes nothing (``steps.record_run`` stores the split in ``training_split``).

The rule, so that a split never changes when images are added:

1. Images are grouped: near-duplicates (the curation stage's duplicate groups, the
   ``curation`` table, when the workdir has one) share a group; any other image is a
   group of its own, keyed by its SHA-256.
2. Each group draws a number in [0, 1) from SHA-256(``seed``, group key). The group is
   held out for validation when the number is below ``validation_fraction``. That
   depends on the group alone, so adding images never moves an existing one, and a
   near-duplicate never sits on both sides.
3. At least one image is held out, and one trained on: when no group draws below the
   fraction, the group with the smallest number is held out; when every group does, the
   one with the largest trains. Adding images could change which group that is, so 4.
   applies.
4. ``previous``: the sides an earlier run of the same fine-tune recorded. A known image
   keeps its side; a group that holds a recorded validation image stays in validation
   (a curation merge never pulls a held-out image into training).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.errors import InputError

if TYPE_CHECKING:
    from evaluator.training.dataset import TrainingItem

TRAIN, VALIDATION = "train", "validation"
# Column names the curation table may give its near-duplicate group, in order of preference.
CURATION_GROUP_COLUMNS = ("duplicate_group", "group_id", "near_duplicate_group", "dup_group", "group")


@dataclass
class Split:
    """The two sides, each in the items' order, and the group of every image."""

    train: list[TrainingItem]
    validation: list[TrainingItem]
    seed: int
    validation_fraction: float

    def side_of(self, sha256: str) -> str | None:
        if any(i.sha256 == sha256 for i in self.validation):
            return VALIDATION
        if any(i.sha256 == sha256 for i in self.train):
            return TRAIN
        return None

    def rows(self) -> list[dict]:
        """One row per image (the ``training_split`` columns but the run)."""
        out = []
        for side, items in ((TRAIN, self.train), (VALIDATION, self.validation)):
            seen = set()
            for item in items:
                if item.sha256 in seen:  # the same bytes twice in a dataset: one row
                    continue
                seen.add(item.sha256)
                out.append({"sha256": item.sha256, "path": str(item.path), "side": side, "group": item.group_key})
        return out


def draw(seed: int, group_key: str) -> float:
    """The group's number in [0, 1): the first 8 bytes of SHA-256("seed:key") over 2**64."""
    digest = hashlib.sha256(f"{int(seed)}:{group_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_items(
    items: list[TrainingItem],
    validation_fraction: float,
    seed: int = 0,
    previous: dict[str, str] | None = None,
) -> Split:
    """Split ``items`` by the rule of the module docstring (groups from ``item.group``)."""
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, int | float) \
            or not 0 < validation_fraction < 1:
        raise InputError(f"validation_fraction must be a number strictly between 0 and 1 but is {validation_fraction!r}")
    groups: dict[str, list[TrainingItem]] = {}
    for item in items:
        groups.setdefault(item.group_key, []).append(item)
    if len(groups) < 2:
        raise InputError(f"a training/validation split needs at least 2 distinct images (or near-duplicate groups) "
                         f"but the dataset has {len(groups)}")
    previous = previous or {}
    held = {key for key, members in groups.items() if _held_out(key, members, seed, validation_fraction, previous)}
    if not held:
        held = {min(groups, key=lambda key: draw(seed, key))}
    if len(held) == len(groups):  # a tiny dataset: the group with the largest number trains
        held.discard(max(groups, key=lambda key: draw(seed, key)))
    validation = [i for i in items if i.group_key in held]
    train = [i for i in items if i.group_key not in held]
    return Split(train, validation, int(seed), float(validation_fraction))


def _held_out(key: str, members: list[TrainingItem], seed: int, fraction: float, previous: dict[str, str]) -> bool:
    sides = {previous[m.sha256] for m in members if m.sha256 in previous}
    if VALIDATION in sides:
        return True
    if TRAIN in sides:
        return False
    return draw(seed, key) < fraction


# ------------------------------------------------------------------ from the store


def _read_rows(store: Path, sql: str, params: list) -> list[tuple]:
    """Rows of a read-only query, or [] when the store or the table does not exist."""
    if not store.is_file():
        return []
    import duckdb

    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(store)
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.CatalogException:  # the table (an older store, no curation yet) is absent
        return []
    finally:
        con.close()


def curation_groups(store: Path) -> dict[str, str]:
    """sha256 -> near-duplicate group from the store's ``curation`` table ({} when absent).

    Read defensively: the table comes from the curation stage; its group column is the
    first of ``CURATION_GROUP_COLUMNS`` it has. Rows without a group are their own group.
    """
    columns = {r[0] for r in _read_rows(
        store, "SELECT column_name FROM information_schema.columns WHERE table_name = 'curation'", [])}
    column = next((c for c in CURATION_GROUP_COLUMNS if c in columns), None)
    if column is None or "sha256" not in columns:
        return {}
    rows = _read_rows(store, f'SELECT sha256, CAST("{column}" AS VARCHAR) FROM curation '
                             f'WHERE sha256 IS NOT NULL AND "{column}" IS NOT NULL', [])
    return {sha: f"curation:{group}" for sha, group in rows}


def previous_split(store: Path, output_name: str) -> dict[str, str]:
    """sha256 -> side recorded by the runs of ``output_name`` (latest run wins; {} when none)."""
    rows = _read_rows(
        store,
        "SELECT s.sha256, s.side FROM training_split s JOIN training_runs r ON r.run = s.run "
        "WHERE r.output_name = ? ORDER BY r.created, s.run",
        [output_name],
    )
    return {sha: side for sha, side in rows}


def split_for_run(
    items: list[TrainingItem], validation_fraction: float, seed: int, store: Path, output_name: str
) -> tuple[list[TrainingItem], Split]:
    """The workdir-aware split: curation groups applied, earlier runs' sides kept.

    Returns the items with their groups (as trained on) and the split.
    """
    from dataclasses import replace

    groups = curation_groups(store)
    grouped = [replace(i, group=groups.get(i.sha256, i.group)) for i in items]
    return grouped, split_items(grouped, validation_fraction, seed, previous_split(store, output_name))
