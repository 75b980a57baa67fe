"""Every environment variable atelier reads, in one place (the README lists them).

Library code asks this module, never ``os.environ``, so a setting has one name, one
parser and one error message. Each reader takes an optional mapping for tests. This
module imports only the standard library: ``catalog`` reads it too without a circle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError

# name -> what it sets; the README's table is this list.
VARIABLES: dict[str, str] = {
    "ATELIER_CATALOG": "the catalog CSV used when no --catalog is given (default: the packaged styles.csv)",
    "ATELIER_CACHE": "where derived files go (offline tokenizers, configs); default ~/.cache/atelier",
    "ATELIER_TEXT_CACHE": "text embeddings shared by every workdir, per model (default $ATELIER_CACHE/text-embeddings; `workdir` keeps them in each workdir)",
    "ATELIER_RUN_ID": "the run id of a generation run (default: time + random, or derived from the plan under a launcher)",
    "ATELIER_WORKDIR": "the workdir the dashboard opens when no --workdir is given",
    "ATELIER_DASHBOARD_LOCK_TIMEOUT": "seconds a dashboard page waits for a writer before showing cached results (default 3)",
    "ATELIER_CLIP_MODEL": "default of --model (open_clip architecture, hf-hub id or local folder)",
    "ATELIER_CLIP_PRETRAINED": "default of --pretrained",
    "ATELIER_SERVE_CONFIG": "set by `atelier serve --workers N` for its worker processes: the server's settings as JSON (not set by hand)",
    "RANK, WORLD_SIZE, LOCAL_RANK": "this process's place under torchrun / accelerate (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID as fallback)",
    "TORCHELASTIC_RUN_ID, MASTER_ADDR, MASTER_PORT, SLURM_JOB_ID": "the launcher's rendezvous, from which ranks derive one run id",
    "HF_HUB_OFFLINE": "1/true/yes forbids hub downloads when loading checkpoints",
}

RENDEZVOUS_VARIABLES = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID")
DEFAULT_DASHBOARD_LOCK_TIMEOUT = 3.0  # covers a scoring commit; longer would freeze a page


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _get(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = _env(environ).get(name)
    return value if value not in (None, "") else None


def catalog_path(environ: Mapping[str, str] | None = None) -> Path | None:
    value = _get("ATELIER_CATALOG", environ)
    return Path(value) if value else None


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    value = _get("ATELIER_CACHE", environ)
    return Path(value) if value else Path.home() / ".cache" / "atelier"


# ATELIER_TEXT_CACHE's value that keeps text embeddings inside each workdir instead.
TEXT_CACHE_IN_WORKDIR = "workdir"


def text_cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder of the cross-workdir text-embedding cache (one subfolder per model), or
    None when each workdir keeps its own: 9,672 catalog texts are then embedded once per
    model, not once per workdir."""
    value = _get("ATELIER_TEXT_CACHE", environ)
    if value == TEXT_CACHE_IN_WORKDIR:
        return None
    return Path(value).expanduser() if value else cache_dir(environ) / "text-embeddings"


def run_id(environ: Mapping[str, str] | None = None) -> str | None:
    return _get("ATELIER_RUN_ID", environ)


def dashboard_workdir(environ: Mapping[str, str] | None = None) -> str | None:
    return _get("ATELIER_WORKDIR", environ)


def dashboard_lock_timeout(environ: Mapping[str, str] | None = None) -> float:
    raw = _get("ATELIER_DASHBOARD_LOCK_TIMEOUT", environ)
    if raw is None:
        return DEFAULT_DASHBOARD_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError as exc:
        raise InputError(f"ATELIER_DASHBOARD_LOCK_TIMEOUT must be a number of seconds but is {raw!r}") from exc
    if not value >= 0:
        raise InputError(f"ATELIER_DASHBOARD_LOCK_TIMEOUT must be >= 0 but is {value}")
    return value


def clip_model(environ: Mapping[str, str] | None = None) -> str | None:
    return _get("ATELIER_CLIP_MODEL", environ)


def clip_pretrained(environ: Mapping[str, str] | None = None) -> str | None:
    return _get("ATELIER_CLIP_PRETRAINED", environ)


def serve_config(environ: Mapping[str, str] | None = None) -> str | None:
    """The JSON settings `atelier serve` hands its worker processes (``ServeConfig.to_json``)."""
    return _get("ATELIER_SERVE_CONFIG", environ)


def set_serve_config(text: str) -> None:
    """Hand `atelier serve`'s settings to the worker processes it is about to start."""
    os.environ["ATELIER_SERVE_CONFIG"] = text


def hub_offline(environ: Mapping[str, str] | None = None) -> bool:
    return (_get("HF_HUB_OFFLINE", environ) or "").lower() in ("1", "true", "yes")


def _int(names: tuple[str, ...], environ: Mapping[str, str] | None) -> int | None:
    for name in names:
        value = _get(name, environ)
        if value is not None:
            try:
                return int(value)
            except ValueError as exc:
                raise InputError(f"environment variable {name} must be an integer but is {value!r}") from exc
    return None


@dataclass(frozen=True)
class LauncherEnv:
    """What torchrun / accelerate / SLURM told this process (None: not set)."""

    rank: int | None
    world_size: int | None
    local_rank: int | None
    rendezvous: tuple[tuple[str, str], ...]


def launcher(environ: Mapping[str, str] | None = None) -> LauncherEnv:
    return LauncherEnv(
        rank=_int(("RANK", "SLURM_PROCID"), environ),
        world_size=_int(("WORLD_SIZE", "SLURM_NTASKS"), environ),
        local_rank=_int(("LOCAL_RANK", "SLURM_LOCALID"), environ),
        rendezvous=tuple((name, _env(environ).get(name, "")) for name in RENDEZVOUS_VARIABLES),
    )
