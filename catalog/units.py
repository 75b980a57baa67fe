"""The work unit: one image to make, and its stable identity.

A unit is (checkpoint, artist, template, prompt, negative prompt, seed, size, steps,
guidance, scheduler). Its id is a hash of those fields, so the same unit planned twice,
on two machines or a month apart, has the same id, and a rerun can tell what is done.

Reads and writes nothing: ``catalog.plan`` writes units to a plan file, the generator
reads them back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from evaluator.errors import InputError

# Fields that define the image. Changing any of them makes a different unit.
IDENTITY_FIELDS = (
    "checkpoint",
    "artist_id",
    "template",
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "steps",
    "guidance",
    "scheduler",
)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    checkpoint: str
    artist_id: str
    template: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str

    @property
    def unit_id(self) -> str:
        return unit_id_of(self)

    @property
    def image_id(self) -> int:
        return image_id_of(self.unit_id)

    def relpath(self, suffix: str = ".png") -> str:
        """Deterministic image path inside the workdir's ``images/`` folder.

        ``checkpoint/artist/template-seed-<unit8>.png``: the short unit id keeps two
        units that differ only in size, steps or guidance from overwriting each other.
        """
        return f"{self.checkpoint}/{self.artist_id}/{self.template}-{self.seed}-{self.unit_id[:8]}{suffix}"

    def to_dict(self) -> dict:
        record = asdict(self)
        record["unit_id"] = self.unit_id
        record["image_id"] = self.image_id
        return record

    @classmethod
    def from_dict(cls, record: dict) -> WorkUnit:
        names = {f.name for f in fields(cls)}
        return cls(**{k: record[k] for k in names})


def unit_id_of(unit: WorkUnit) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of the identity fields."""
    payload = {name: getattr(unit, name) for name in IDENTITY_FIELDS}
    payload["guidance"] = float(payload["guidance"])  # 7 and 7.0 are one unit
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def image_id_of(unit_id: str) -> int:
    """A non-negative int64 (FAISS ids are int64) derived from a 16-hex-digit id."""
    return int(unit_id, 16) >> 1


def shard(units: list[WorkUnit], rank: int, world_size: int) -> list[WorkUnit]:
    """Units of one rank: every ``world_size``-th unit of the deterministic order.

    Interleaving (not contiguous blocks) spreads checkpoints and artists evenly, so
    ranks finish at about the same time. The union over ranks is every unit once.
    """
    if world_size < 1:
        raise InputError(f"world_size must be >= 1 but is {world_size}")
    if not 0 <= rank < world_size:
        raise InputError(f"rank must be in [0, {world_size}) but is {rank}")
    return units[rank::world_size]


# The artist id of units made from the `null` template (no artist in the prompt): one
# per (checkpoint, seed, settings), the baseline for the `recognized` verdict.
BASELINE_ARTIST_ID = "_baseline"

# Multi-valued catalog fields (aliases, movements, mediums, tags, sources) are stored
# as one string joined with this separator, in styles.csv and in the `artists` table.
LIST_SEPARATOR = "; "
