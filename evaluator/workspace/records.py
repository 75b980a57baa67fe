"""The records every stage writes about its work: runs, images and their provenance.

One definition each, so a run record reads the same whoever wrote it (generate, import,
index, score) and an image row the same whether generated or imported:

* ``Provenance``: git revision (``+dirty`` when the tree has changes), package versions,
  host, device and dtype, collected once per run.
* ``RunRecord``: one row of the ``runs`` table; ``write`` puts its JSON under ``runs/``.
* ``image_record``: one row of the ``images`` table (= the manifest shard schema).
* ``load_run_records`` / ``load_checkpoint_records``: read back what the runs wrote,
  ranks of one launch merged.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from catalog.atomic import atomic_write_text
from evaluator.errors import InputError
from evaluator.workspace.workdir import Workdir

# Column order of the ``runs`` table (evaluator/workspace/store.py holds the DDL).
RUN_COLUMNS = (
    "run_id", "kind", "started_at", "finished_at", "status", "config", "versions", "git_rev", "device",
    "dtype", "timings", "n_done", "n_skipped", "n_failed", "host", "message",
)
# Packages whose versions change results; recorded with every run.
VERSIONED_PACKAGES = (
    "atelier", "torch", "diffusers", "transformers", "safetensors", "peft", "accelerate", "pillow",
    "open_clip_torch", "faiss-cpu", "duckdb", "numpy", "pandas", "pyarrow",
)
REPO_ROOT = Path(__file__).resolve().parents[2]


def utcnow() -> datetime:
    """Naive UTC now: DuckDB TIMESTAMP columns hold no zone."""
    return datetime.now(UTC).replace(tzinfo=None)


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The project's git revision (``+dirty`` when tracked files changed), or None outside a clone."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    """Python and each of ``VERSIONED_PACKAGES`` (None when not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Provenance:
    """Where and with what a run ran: stamped on its ``runs`` row."""

    git_rev: str | None
    versions: dict[str, str | None]
    host: str
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def collect(cls, device: str | None = None, dtype: str | None = None) -> Provenance:
        return cls(git_revision(), package_versions(), socket.gethostname(), device, dtype)


@dataclass
class RunRecord:
    """One row of ``runs``. ``config``, ``timings`` are plain dicts here, JSON in the row."""

    run_id: str
    kind: str  # generate | import | index | score
    provenance: Provenance
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "ok"
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    message: str | None = None
    # Set by each rank of a launch; load_run_records merges the ranks' files.
    rank: int | None = None
    world_size: int | None = None

    def row(self) -> dict[str, Any]:
        """The ``runs`` row (JSON columns as text), in ``RUN_COLUMNS`` order."""
        return {
            "run_id": self.run_id, "kind": self.kind, "started_at": self.started_at,
            "finished_at": self.finished_at, "status": self.status,
            "config": json.dumps(self.config, default=str), "versions": json.dumps(self.provenance.versions),
            "git_rev": self.provenance.git_rev, "device": self.provenance.device, "dtype": self.provenance.dtype,
            "timings": json.dumps(self.timings), "n_done": self.n_done, "n_skipped": self.n_skipped,
            "n_failed": self.n_failed, "host": self.provenance.host, "message": self.message,
        }

    def to_json(self) -> dict[str, Any]:
        """The row as written under ``runs/`` (ISO times; rank fields for launched ranks)."""
        out = self.row()
        for key in ("started_at", "finished_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat(timespec="seconds")
        if self.world_size is not None and self.world_size > 1:
            out["rank"], out["world_size"] = self.rank, self.world_size
        return out

    def write(self, wd: Workdir) -> Path:
        """``runs/<run_id>.json`` (``<run_id>.rank<R>.json`` per rank of a launch), atomically."""
        launched = self.world_size is not None and self.world_size > 1
        name = f"{self.run_id}.rank{self.rank}.json" if launched else f"{self.run_id}.json"
        path = wd.runs / name
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


# Columns of the ``images`` table and of every manifest shard: name -> Arrow type name,
# kept as strings so this module imports without pyarrow.
IMAGE_COLUMNS: dict[str, str] = {
    "image_id": "int64",
    "unit_id": "string",
    "source": "string",  # generated | imported | reference
    "checkpoint": "string",
    "artist_id": "string",
    "template": "string",
    "prompt": "string",
    "negative_prompt": "string",
    # -1 = unknown; NULL when the seed does not fit int64 (ComfyUI's reach 2**64 - 1)
    "seed": "int64",
    "width": "int32",
    "height": "int32",
    "steps": "int32",
    "guidance": "float64",
    "scheduler": "string",
    "path": "string",  # relative to the workdir
    "thumb_path": "string",  # relative to the workdir
    "sha256": "string",
    "seconds": "float64",
    "error": "string",  # null when the image is fine
    "run_id": "string",
    "created_at": "timestamp[us]",
    # the seed exactly, in decimal (any of [0, 2**64)); null when unknown (migration 8)
    "seed_text": "string",
    # an imported image's original file, relative to the import root, and the SHA-256 of
    # its bytes (its copy under imported/ is re-encoded): where it came from (migration 6)
    "source_path": "string",
    "source_sha256": "string",
}
INT64_MAX = 2**63 - 1
UNKNOWN_SEED = -1
# Every column starts as null but these two: a row is generated unless the importer says
# otherwise, and "no negative prompt" is the empty string (it is part of the unit id).
IMAGE_DEFAULTS: dict[str, Any] = {name: None for name in IMAGE_COLUMNS} | {"source": "generated", "negative_prompt": ""}


def image_record(unit, run_id: str, **fields: Any) -> dict[str, Any]:
    """The ``images`` row of a work unit (generated or imported); ``fields`` override."""
    record = dict(IMAGE_DEFAULTS)
    record.update(
        image_id=unit.image_id, unit_id=unit.unit_id, checkpoint=unit.checkpoint, artist_id=unit.artist_id,
        template=unit.template, prompt=unit.prompt, negative_prompt=unit.negative_prompt, seed=unit.seed,
        width=unit.width, height=unit.height, steps=unit.steps, guidance=float(unit.guidance),
        scheduler=unit.scheduler, run_id=run_id, created_at=utcnow(),
    )
    unknown = set(fields) - set(IMAGE_DEFAULTS)
    if unknown:
        raise TypeError(f"image_record got fields the images table does not have: {sorted(unknown)}")
    record.update(fields)
    record.update(seed_columns(record["seed"]))
    return record


def seed_columns(seed: int | None) -> dict[str, Any]:
    """``seed`` and ``seed_text`` of a seed: a seed above int64 keeps its exact value in
    ``seed_text`` and NULL in ``seed`` (mapping it into int64 would collide with -1 =
    unknown or with another seed); an unknown seed is -1 and NULL."""
    if seed is None or seed < 0:
        return {"seed": UNKNOWN_SEED, "seed_text": None}
    return {"seed": seed if seed <= INT64_MAX else None, "seed_text": str(seed)}


def seed_pairing_keys(frame) -> Any:
    """int64 keys that pair images by seed (equal iff the seeds are equal; -1 = unknown),
    for the scorers' arrays. The seeds themselves when all fit int64 (every generated
    set); else every known seed is replaced by its rank among the distinct seeds, an
    order-keeping map, so groupings, pairings and bootstrap draws are unchanged."""
    import numpy as np
    import pandas as pd

    seed = pd.to_numeric(frame["seed"], errors="coerce") if "seed" in frame else pd.Series(np.nan, index=frame.index)
    text = frame["seed_text"] if "seed_text" in frame else pd.Series(None, index=frame.index, dtype=object)
    big = seed.isna() & text.notna()
    if not big.any():
        return seed.fillna(UNKNOWN_SEED).to_numpy(dtype=np.int64)
    exact = [int(t) if isinstance(t, str) and t else (int(s) if pd.notna(s) and s >= 0 else None)
             for s, t in zip(seed.tolist(), text.tolist(), strict=True)]
    rank = {value: i for i, value in enumerate(sorted({v for v in exact if v is not None}))}
    return np.array([UNKNOWN_SEED if v is None else rank[v] for v in exact], dtype=np.int64)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {path} is not valid JSON: {exc}") from exc


def load_checkpoint_records(workdir: str | Path) -> list[dict]:
    """The ``checkpoints`` rows written by generation (``DIR/checkpoints/<name>.json``)."""
    folder = Workdir.at(workdir, create=False).checkpoints
    if not folder.is_dir():
        return []
    return [
        _read_json(path, "checkpoint record")
        for path in sorted(folder.glob("*.json"))
        if not path.name.endswith(".files.json") and not path.name.startswith(".")
    ]


def _merge_ranks(parts: list[dict]) -> dict:
    """One run's record from its ranks' records: counts summed, times spanned."""
    parts = sorted(parts, key=lambda r: r.get("rank", 0))
    record = dict(parts[0])
    record.pop("rank", None)
    record.pop("world_size", None)
    if len(parts) == 1:
        return record
    record["started_at"] = min(p["started_at"] for p in parts if p.get("started_at"))
    finished = [p["finished_at"] for p in parts if p.get("finished_at")]
    record["finished_at"] = max(finished) if finished else None
    for key in ("n_done", "n_skipped", "n_failed"):
        record[key] = sum(int(p.get(key) or 0) for p in parts)
    statuses = {p.get("status") for p in parts}
    record["status"] = "ok" if statuses == {"ok"} else ",".join(sorted(s for s in statuses if s))
    record["timings"] = json.dumps({f"rank{p.get('rank', 0)}": json.loads(p.get("timings") or "{}") for p in parts})
    record["host"] = ",".join(sorted({p.get("host") or "" for p in parts}))
    return record


def load_run_records(workdir: str | Path) -> list[dict]:
    """The ``runs`` rows: one per run id, ranks merged.

    A single-process run writes ``runs/<run_id>.json``; each rank of a launch writes
    ``runs/<run_id>.rank<R>.json`` (ranks do not talk to each other); they are merged here.
    """
    folder = Workdir.at(workdir, create=False).runs
    if not folder.is_dir():
        return []
    by_id: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        record = _read_json(path, "run record")
        if not isinstance(record, dict) or not record.get("run_id"):
            raise InputError(f"run record {path} has no 'run_id' (expected an object with the runs table's columns)")
        by_id.setdefault(record["run_id"], []).append(record)
    return [_merge_ranks(parts) for parts in by_id.values()]

