"""The generation runner: work units in, PNG images + thumbnails + manifest shards out.

Reads the units, a checkpoints TOML and the weights it names, and the workdir's earlier
manifests and images; writes ``images/``, ``thumbs/``, ``manifests/<run_id>/``,
``checkpoints/<name>.json`` and ``runs/<run_id>.json``. Never the store.

One process (or one rank of ``torchrun`` / ``accelerate launch``) takes its share of the
units (``catalog.units.shard``), skips those already made, loads each checkpoint once,
and generates in batches of units that share settings. Every image gets its own CPU
``torch.Generator`` seeded from the unit, so it can be reproduced alone and the same
seed gives the same starting noise on every checkpoint.

Crash safety: images and thumbnails are written atomically (temporary file + rename),
so a killed process leaves only whole files; manifest parts are flushed every few
batches. On a rerun, an image found on disk without a manifest record is verified and
recorded without being generated again, so nothing is lost and nothing is made twice.

Failures: a batch that runs out of memory is halved and retried (down to one image);
any other error, or a NaN / all-black image, is recorded in the unit's ``error`` column
and the run goes on. ``retry_failed`` makes them again.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from catalog.units import WorkUnit, shard
from evaluator.errors import InputError, StateError
from evaluator.generation.distributed import DistEnv, device_for, dist_env
from evaluator.generation.pngmeta import InfotextParams, png_is_complete
from evaluator.workspace.records import Provenance, RunRecord, image_record, utcnow
from evaluator.workspace.workdir import Workdir


@dataclass
class GenerateConfig:
    """How to run generation. Defaults are safe on any machine; GPUs pass device/dtype."""

    # 4: fills a CPU's cores and a consumer GPU at 512 px without running out of memory;
    # SDXL at 1024 px on 24 GB takes 4-8. Out-of-memory halves it automatically.
    batch_size: int = 4
    # CPU by default: it always exists; pass "cuda" (each rank takes cuda:<local_rank>).
    device: str = "cpu"
    # None: fp32 on CPU (fp16 is slow or unsupported there), fp16 on CUDA (half the memory,
    # ~2x speed, same images to the eye); "bfloat16" on GPUs that prefer it.
    dtype: str | None = None
    # PyTorch's fused scaled-dot-product attention: fastest, least memory, no extra package.
    attention: str = "sdpa"
    # torch.compile of the UNet: 10-30 % faster on a GPU after a minute of compiling; off
    # by default because short runs and CPUs do not earn the compile time back.
    compile: bool = False
    # Longest side of the dashboard thumbnails (see evaluator.workspace.thumbs).
    thumb_size: int = 192
    # Flush a manifest part every 8 batches: a crash loses at most 8 batches of records,
    # and those images are recovered from disk on the rerun anyway.
    part_every: int = 8
    # Failed units are not retried by default: a NaN checkpoint would fail again.
    retry_failed: bool = False
    # Pickles can run code: refused unless asked for (then weights_only=True).
    allow_pickle: bool = False
    # Hash every byte of every weight file instead of size + first/last MiB.
    full_hash: bool = False
    # Refuse to add images under a checkpoint name whose weights changed since the
    # workdir's existing images were made (they would no longer be comparable).
    allow_changed: bool = False
    # Make at most this many new images (smoke tests, quick looks).
    limit: int | None = None
    # PNG zlib level 4: files ~5 % larger than level 9 for a third of the encoding time.
    png_compress_level: int = 4
    # One writer thread encodes PNGs and thumbnails while the model computes the next batch.
    writer_threads: int = 1
    # CPU threads for torch (None: torch's default, one per core). On a shared or small
    # machine 1 can be several times faster: idle-spinning OpenMP threads starve.
    threads: int | None = None
    progress: bool = True
    # None: a fresh id per run (shared by all ranks of one launch; see run_id_for).
    run_id: str | None = None
    # None: follow HF_HUB_OFFLINE; True forbids hub downloads.
    offline: bool | None = None

    def validate(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1 but is {self.batch_size!r}")
        if self.part_every < 1:
            raise InputError(f"part_every must be >= 1 but is {self.part_every}")
        if self.thumb_size < 8:
            raise InputError(f"thumb_size must be >= 8 but is {self.thumb_size}")
        if self.limit is not None and self.limit < 0:
            raise InputError(f"limit must be >= 0 but is {self.limit}")
        if self.attention not in ("sdpa", "default"):
            raise InputError(f"attention must be 'sdpa' or 'default' but is {self.attention!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps", "xpu"))):
            raise InputError(f"device must be cpu, cuda, cuda:N, mps or xpu but is {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1 but is {self.threads}")
        if not 0 <= self.png_compress_level <= 9:
            raise InputError(f"png_compress_level must be in [0, 9] but is {self.png_compress_level}")


@dataclass
class GenerateSummary:
    run_id: str
    rank: int
    world_size: int
    total: int  # units of this rank
    done: int = 0  # images made now
    skipped: int = 0  # already made (or failed earlier and not retried)
    recovered: int = 0  # found on disk without a record (a killed run); recorded, not remade
    failed: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    manifest_parts: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # unit_id -> error

    def count_failure(self, unit_id: str, error: str) -> None:
        self.failed += 1
        self.errors[unit_id] = error

    def line(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size}: {self.done} made, {self.skipped} skipped, "
            f"{self.recovered} recovered, {self.failed} failed in {self.seconds:.1f}s "
            f"({self.images_per_s:.2f} images/s); run {self.run_id}"
        )


class GenerateError(StateError):
    """The run cannot start (bad units, checkpoints, or a changed checkpoint)."""


# ------------------------------------------------------------------ helpers


def run_id_for(units: list[WorkUnit], world_size: int, explicit: str | None = None) -> str:
    """The run id. One process: time + random. Several ranks must agree without talking,
    so it is derived from the plan and the launcher's rendezvous (``TORCHELASTIC_RUN_ID``,
    ``MASTER_ADDR:MASTER_PORT``); ``ATELIER_RUN_ID`` or ``explicit`` override both."""
    import hashlib

    from evaluator.workspace import settings

    chosen = explicit or settings.run_id()
    if chosen:
        return chosen
    if world_size <= 1:
        return f"gen-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    digest = hashlib.sha256()
    for unit in units:
        digest.update(unit.unit_id.encode())
    for name, value in settings.launcher().rendezvous:
        digest.update(f"{name}={value};".encode())
    digest.update(str(world_size).encode())
    return f"gen-{digest.hexdigest()[:12]}"


def validate_units(units: Iterable[WorkUnit], specs: dict) -> None:
    """Every unit usable: known checkpoint, size divisible by 8, steps >= 1, known scheduler."""
    import difflib

    from evaluator.generation.checkpoints import SCHEDULER_NAMES

    for index, unit in enumerate(units):
        where = f"unit #{index} ({unit.unit_id}, {unit.checkpoint}/{unit.artist_id})"
        if unit.checkpoint not in specs:
            close = difflib.get_close_matches(unit.checkpoint, list(specs), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the file has {', '.join(specs)}"
            raise GenerateError(f"{where}: checkpoint {unit.checkpoint!r} is not in the checkpoints file{hint}")
        for label in ("width", "height"):
            value = getattr(unit, label)
            if not isinstance(value, int) or value <= 0 or value % 8:
                raise GenerateError(f"{where}: {label} must be a positive multiple of 8 but is {value!r}")
        if not isinstance(unit.steps, int) or unit.steps < 1:
            raise GenerateError(f"{where}: steps must be >= 1 but is {unit.steps!r}")
        if not unit.guidance >= 0:
            raise GenerateError(f"{where}: guidance must be >= 0 but is {unit.guidance!r}")
        if unit.scheduler not in SCHEDULER_NAMES:
            close = difflib.get_close_matches(unit.scheduler, SCHEDULER_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(SCHEDULER_NAMES)}"
            raise GenerateError(f"{where}: unknown scheduler {unit.scheduler!r}{hint}")
        _check_prompt_syntax(unit, where)


def _check_prompt_syntax(unit: WorkUnit, where: str) -> None:
    """A prompt in A1111 syntax must parse (a prompt without brackets always does)."""
    from evaluator.generation.weighting import prompt_nodes

    for label in ("prompt", "negative_prompt"):
        try:
            prompt_nodes(getattr(unit, label), f"{where}: {label}")
        except InputError as exc:
            raise GenerateError(str(exc)) from None


def is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return name == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text


def run_with_backoff(
    batch: list,
    run: Callable[[list], list],
    on_oom: Callable[[int], None] | None = None,
) -> list[tuple[object, object | None, str | None]]:
    """Run ``run(batch)``; on out-of-memory, halve and retry the halves (down to one item).

    Any other error fails a single item at once; a bigger batch is retried item by item
    so one bad unit does not take its neighbours down. Returns (item, output, error).
    """
    try:
        outputs = run(batch)
        return [(item, out, None) for item, out in zip(batch, outputs, strict=True)]
    except Exception as exc:
        oom = is_oom(exc)
        if len(batch) == 1:
            message = f"out of memory at batch size 1: {exc}" if oom else f"{type(exc).__name__}: {exc}"
            return [(batch[0], None, message.splitlines()[0] if message else type(exc).__name__)]
        _free_memory()
        if oom:
            half = (len(batch) + 1) // 2
            if on_oom is not None:
                on_oom(half)
            return run_with_backoff(batch[:half], run, on_oom) + run_with_backoff(batch[half:], run, on_oom)
        results = []
        for item in batch:
            results.extend(run_with_backoff([item], run, on_oom))
        return results


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def settings_key(unit: WorkUnit) -> tuple:
    """Units batched together share every setting but the prompt and seed (and so the
    negative prompt too: SDXL zeroes an empty one, which must not depend on neighbours)."""
    return (unit.checkpoint, unit.width, unit.height, unit.steps, float(unit.guidance), unit.scheduler, unit.negative_prompt)


def make_batches(units: list[WorkUnit], batch_size: int) -> list[list[WorkUnit]]:
    """Group by settings (keeping first-seen order: checkpoint-major plans stay so), then cut."""
    groups: dict[tuple, list[WorkUnit]] = {}
    checkpoint_order: dict[str, int] = {}
    for unit in units:
        checkpoint_order.setdefault(unit.checkpoint, len(checkpoint_order))
        groups.setdefault(settings_key(unit), []).append(unit)
    # All groups of a checkpoint together, so each pipeline is loaded once per run even
    # when the plan interleaves checkpoints.
    ordered = sorted(groups.values(), key=lambda members: checkpoint_order[members[0].checkpoint])
    batches = []
    for members in ordered:
        for start in range(0, len(members), batch_size):
            batches.append(members[start : start + batch_size])
    return batches


def images_to_uint8(images) -> list:
    """Float [0,1] arrays -> uint8 arrays, rejecting NaN/inf and all-black outputs."""
    import numpy as np

    out = []
    for image in images:
        if not np.isfinite(image).all():
            out.append(ValueError("NaN/inf in the decoded image (fp16 overflow or broken weights)"))
            continue
        pixels = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if int(pixels.max()) == 0:
            out.append(ValueError("black image (every pixel 0): NaN latents or a safety checker"))
            continue
        out.append(pixels)
    return out


# ------------------------------------------------------ checkpoint records


def check_and_record_checkpoints(
    names: list[str], specs: dict, wd: Workdir, config: GenerateConfig, write: bool = True
) -> dict[str, dict]:
    """Fingerprint each checkpoint; refuse one whose weights changed under existing images.

    Returns name -> {"fingerprint", "files", "kind", "record"}. Writes
    ``checkpoints/<name>.json`` (the ``checkpoints`` row) and ``<name>.files.json``.
    """
    from catalog.atomic import atomic_write_text
    from evaluator.generation.checkpoints import (
        CheckpointChangedError,
        changed_files,
        checkpoint_record,
        detect_kind,
        fingerprint,
        resolve_source,
    )

    out = {}
    for name in names:
        spec = specs[name]
        quick = fingerprint(spec, specs, full=False)
        full = fingerprint(spec, specs, full=True) if config.full_hash else None
        value = quick["fingerprint"] + (f";{full['fingerprint']}" if full else "")
        record_path = wd.checkpoints / f"{name}.json"
        files_path = wd.checkpoints / f"{name}.files.json"
        if record_path.is_file():
            old = json.loads(record_path.read_text())
            old_quick = str(old.get("fingerprint") or "").split(";")[0]
            has_images = (wd.images / name).is_dir() and any((wd.images / name).rglob("*.png"))
            if old_quick and old_quick != quick["fingerprint"] and has_images:
                old_files = json.loads(files_path.read_text()) if files_path.is_file() else {}
                which = changed_files(old_files, quick["files"]) or ["(per-file details were not recorded)"]
                message = (
                    f"checkpoint {name!r} ({spec.file}): its weights changed since the images in "
                    f"{wd.images / name} were made (fingerprint {old_quick} -> {quick['fingerprint']}; "
                    f"changed: {', '.join(which)}). Give the new weights a new name in the checkpoints "
                    "file, or pass --allow-changed to mix them"
                )
                if not config.allow_changed:
                    raise CheckpointChangedError(message)
                print(f"warning: {message}")
        origin = resolve_source(spec, specs)
        try:
            kind = detect_kind(spec, specs, config.allow_pickle)
        except Exception:
            kind = spec.kind or origin.kind  # a hub model not yet cached: known after loading
        record = checkpoint_record(spec, specs, {"fingerprint": value}, kind)
        previous = json.loads(record_path.read_text()) if record_path.is_file() else None
        write_this = write
        if previous is not None and previous.get("fingerprint") == value:
            record["added_at"] = previous.get("added_at", record["added_at"])  # first seen, kept
            if previous == record:
                write_this = False  # a rerun changes no file
        if write_this:
            atomic_write_text(record_path, json.dumps(record, indent=2, sort_keys=True))
            atomic_write_text(files_path, json.dumps(quick["files"], indent=2, sort_keys=True))
        out[name] = {"fingerprint": value, "files": quick["files"], "kind": kind, "record": record}
    return out


# ---------------------------------------------------------------- the runner


def _manifest_state(wd: Workdir):
    """unit_id -> latest manifest record (dict) across every run's shards."""
    from evaluator.workspace.manifest import read_manifests

    frame = read_manifests(wd.manifests)
    if len(frame) == 0:
        return {}
    frame = frame[frame["source"] == "generated"]
    keep = frame[["unit_id", "error"]]
    # pandas reads a null string as NaN (a float): normalise to None.
    return {row.unit_id: {"error": row.error if isinstance(row.error, str) else None} for row in keep.itertuples(index=False)}


def _next_part(run_dir: Path, rank: int) -> int:
    numbers = []
    for path in run_dir.glob(f"rank{rank}-part*.parquet"):
        try:
            numbers.append(int(path.stem.split("-part", 1)[1]))
        except ValueError:
            continue
    return max(numbers) + 1 if numbers else 0


class _ManifestWriter:
    """Buffers records and writes ``rank<R>-part<K>.parquet`` parts (atomically)."""

    def __init__(self, run_dir: Path, rank: int):
        self.run_dir = run_dir
        self.rank = rank
        self.part = _next_part(run_dir, rank)
        self.records: list[dict] = []
        self.paths: list[str] = []

    def add(self, record: dict) -> None:
        self.records.append(record)

    def flush(self) -> None:
        from evaluator.workspace.manifest import write_shard

        if not self.records:
            return
        path = self.run_dir / f"rank{self.rank}-part{self.part:05d}.parquet"
        write_shard(self.records, path)
        self.paths.append(str(path))
        self.records = []
        self.part += 1


def _write_image(
    wd: Workdir, unit: WorkUnit, pixels, parameters: str, config: GenerateConfig, run_id: str, seconds: float
) -> dict:
    """Encode + write one PNG and its thumbnail atomically; return its manifest record."""
    import hashlib

    from PIL import Image

    from catalog.atomic import atomic_write_bytes
    from evaluator.generation.pngmeta import encode_png
    from evaluator.workspace.thumbs import write_thumbnail

    image = Image.fromarray(pixels)
    data = encode_png(image, parameters, unit.to_dict(), compress_level=config.png_compress_level)
    relpath = Path("images") / unit.relpath()
    thumb_rel = Path("thumbs") / unit.relpath(".jpg")
    atomic_write_bytes(wd.root / relpath, data)
    write_thumbnail(image, wd.root / thumb_rel, config.thumb_size)
    return image_record(
        unit, run_id, path=relpath.as_posix(), thumb_path=thumb_rel.as_posix(),
        sha256=hashlib.sha256(data).hexdigest(), seconds=seconds,
    )


def _recover_record(wd: Workdir, unit: WorkUnit, run_id: str, config: GenerateConfig) -> dict:
    """Record an image a killed run wrote but never recorded (thumbnail remade if missing)."""
    import hashlib

    from PIL import Image

    from evaluator.workspace.thumbs import write_thumbnail

    relpath = Path("images") / unit.relpath()
    thumb_rel = Path("thumbs") / unit.relpath(".jpg")
    data = (wd.root / relpath).read_bytes()
    if not (wd.root / thumb_rel).is_file():
        with Image.open(wd.root / relpath) as image:
            write_thumbnail(image.convert("RGB"), wd.root / thumb_rel, config.thumb_size)
    return image_record(unit, run_id, path=relpath.as_posix(), thumb_path=thumb_rel.as_posix(), sha256=hashlib.sha256(data).hexdigest())


def _remove_stale_temporaries(units: list[WorkUnit], wd: Workdir) -> int:
    """Delete the temporary files a killed process left beside *this rank's* images.

    ``catalog.atomic`` writes ``.<name>.<random>.tmp`` then renames; SIGKILL leaves the
    temporary. Only names of units this rank owns are touched, so ranks running at the
    same time never delete each other's work in progress.
    """
    wanted: dict[Path, set[str]] = {}
    for unit in units:
        for root, suffix in ((wd.images, ".png"), (wd.thumbs, ".jpg")):
            target = root / unit.relpath(suffix)
            wanted.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                target_name = entry.name[1:].rsplit(".", 2)[0]
                if target_name in names:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
    return removed


def plan_work(units: list[WorkUnit], wd: Workdir, retry_failed: bool) -> tuple[list[WorkUnit], list[WorkUnit], int]:
    """Split units into (to make, to recover from disk, number skipped)."""
    state = _manifest_state(wd)
    _remove_stale_temporaries(units, wd)
    todo, recover, skipped = [], [], 0
    for unit in units:
        path = wd.images / unit.relpath()
        known = state.get(unit.unit_id)
        exists = png_is_complete(path)
        if exists:
            if known is not None and known["error"] is None:
                skipped += 1
            else:
                recover.append(unit)
        elif known is not None and known["error"] is not None and not retry_failed:
            skipped += 1
        else:
            todo.append(unit)
    return todo, recover, skipped


@dataclass
class _Run:
    """One rank's run: what it works from, where it writes, and what it has counted so far."""

    wd: Workdir
    config: GenerateConfig
    env: DistEnv
    specs: dict
    fingerprints: dict[str, dict]  # checkpoint name -> check_and_record_checkpoints' entry
    device: str
    writer: _ManifestWriter
    summary: GenerateSummary
    started: datetime
    t_start: float  # perf_counter at the start, for the total time
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.summary.run_id


def generate(
    units: list[WorkUnit],
    checkpoints_file: str | Path,
    workdir: str | Path,
    config: GenerateConfig | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> GenerateSummary:
    """Make the images of ``units`` this rank owns; return what happened.

    Rank and world size come from the arguments, else the launcher's environment
    (RANK/WORLD_SIZE). Writes images, thumbnails, manifest parts, ``runs/<run_id>…json``
    and ``checkpoints/<name>.json``; never touches the store (ingest does, in one process).
    """
    config = config or GenerateConfig()
    config.validate()
    env = dist_env(rank, world_size)
    run, todo, recover = _start_run(units, checkpoints_file, Workdir.at(workdir), config, env)
    status, message = "ok", None
    try:
        with _torch_threads(config.threads if todo else None):
            _make_images(run, todo, recover)
    except BaseException as exc:
        status, message = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _finish_run(run, status, message)
    return run.summary


def _start_run(
    units: list[WorkUnit], checkpoints_file: str | Path, wd: Workdir, config: GenerateConfig, env: DistEnv
) -> tuple[_Run, list[WorkUnit], list[WorkUnit]]:
    """Check the units and checkpoints, fingerprint them, and split off this rank's work.

    Returns the run and this rank's units to make and to recover from disk. Nothing is
    recorded as a run when this fails: no image was touched.
    """
    from evaluator.generation.checkpoints import load_checkpoints, with_workdir_checkpoints

    started, t_start = utcnow(), time.perf_counter()
    specs = load_checkpoints(checkpoints_file, allow_pickle=config.allow_pickle)
    specs = with_workdir_checkpoints(specs, wd.root, allow_pickle=config.allow_pickle)
    unique: dict[str, WorkUnit] = {}
    for unit in units:
        unique.setdefault(unit.unit_id, unit)
    all_units = list(unique.values())
    validate_units(all_units, specs)
    run_id = run_id_for(all_units, env.world_size, config.run_id)
    names = list(dict.fromkeys(u.checkpoint for u in all_units))
    t0 = time.perf_counter()
    fingerprints = check_and_record_checkpoints(names, specs, wd, config, write=env.is_main)
    timings = {"fingerprint": time.perf_counter() - t0}

    mine = shard(all_units, env.rank, env.world_size)
    todo, recover, skipped = plan_work(mine, wd, config.retry_failed)
    if config.limit is not None:
        todo = todo[: config.limit]
    summary = GenerateSummary(run_id=run_id, rank=env.rank, world_size=env.world_size, total=len(mine), skipped=skipped)
    run = _Run(
        wd, config, env, specs, fingerprints, device_for(config.device, env),
        _ManifestWriter(wd.manifests / run_id, env.rank), summary, started, t_start, timings,
    )
    return run, todo, recover


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, restored afterwards (None: torch's own)."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _make_images(run: _Run, todo: list[WorkUnit], recover: list[WorkUnit]) -> None:
    """Record the images a killed run left unrecorded, then make the rest."""
    for unit in recover:
        run.writer.add(_recover_record(run.wd, unit, run.run_id, run.config))
        run.summary.recovered += 1
    run.writer.flush()
    t_gen = time.perf_counter()
    _run_batches(run, todo)
    run.timings["generate"] = time.perf_counter() - t_gen


def _finish_run(run: _Run, status: str, message: str | None) -> None:
    """Flush the last records, fill in the summary's times, write the run record."""
    run.writer.flush()
    summary = run.summary
    summary.seconds = time.perf_counter() - run.t_start
    made = run.timings.get("generate", 0.0)
    summary.images_per_s = summary.done / made if made > 0 else 0.0
    summary.manifest_parts = run.writer.paths
    run.timings["total"] = summary.seconds
    if status == "ok" and summary.failed:
        status = "failed-units"
    # A rerun with nothing to do leaves no trace (no empty run rows in the store).
    if status != "ok" or summary.done or summary.recovered or summary.failed:
        _write_run_record(run, status, message)


# ------------------------------------------------------------ the batch loop


@dataclass
class _BatchLoop:
    """The batch loop's state: the loaded pipeline, images being written, the batch size."""

    bar: Any  # tqdm
    pool: Any  # ThreadPoolExecutor encoding and writing PNGs
    batch_size: int  # lowered after an out-of-memory, for the rest of the run
    pending: list = field(default_factory=list)  # (unit, future) of images being written
    pipe: Any = None
    current: str | None = None  # the checkpoint loaded (or that failed to load)
    batches_since_flush: int = 0

    def shrink(self, half: int) -> None:
        """After an out-of-memory: cut this and every later batch to ``half``."""
        self.batch_size = min(self.batch_size, half)
        self.bar.write(f"out of memory: batch size now {self.batch_size}")


def _open_loop(run: _Run, todo: list[WorkUnit]) -> _BatchLoop:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    config, env = run.config, run.env
    bar = tqdm(
        total=len(todo), unit="img", desc=f"generate r{env.rank}" if env.world_size > 1 else "generate",
        disable=not config.progress or not todo, position=env.rank if env.world_size > 1 else None,
        dynamic_ncols=True, smoothing=0.1,
    )
    pool = ThreadPoolExecutor(max_workers=max(1, config.writer_threads), thread_name_prefix="atelier-png")
    return _BatchLoop(bar, pool, config.batch_size)


def _run_batches(run: _Run, todo: list[WorkUnit]) -> None:
    """Make ``todo`` batch by batch, each checkpoint's pipeline loaded once; record every unit."""
    loop = _open_loop(run, todo)
    try:
        queue = make_batches(todo, run.config.batch_size)
        while queue:
            batch = queue.pop(0)
            if batch[0].checkpoint != loop.current:
                queue = _switch_checkpoint(run, loop, batch, queue)
            if loop.pipe is None:
                continue
            batch = _fit_batch(batch, queue, loop.batch_size)
            _run_batch(run, loop, batch)
            _drain(run, loop, everything=False)
            loop.batches_since_flush += 1
            if loop.batches_since_flush >= run.config.part_every:
                _drain(run, loop, everything=True)
                run.writer.flush()
                loop.batches_since_flush = 0
        _drain(run, loop, everything=True)
    finally:
        _drain(run, loop, everything=True)
        loop.pool.shutdown(wait=True)
        loop.bar.close()


def _switch_checkpoint(run: _Run, loop: _BatchLoop, batch: list[WorkUnit], queue: list) -> list:
    """Load ``batch``'s checkpoint in place of the current one; return the queue left.

    A checkpoint that fails to load fails every unit of it (this batch and the queued
    ones), and the run goes on with the next checkpoint.
    """
    from evaluator.generation.checkpoints import CheckpointError

    name = batch[0].checkpoint
    _drain(run, loop, everything=True)
    if loop.pipe is not None:  # release the previous checkpoint before loading the next
        loop.pipe = None
        _free_memory()
    loop.current = name
    t0 = time.perf_counter()
    try:
        loop.pipe = _load_pipeline(run, name)
    except CheckpointError as exc:
        error = f"checkpoint failed to load: {exc}"
        loop.bar.write(f"error: {error}")
        for other in [batch] + [b for b in queue if b[0].checkpoint == name]:
            for unit in other:
                _fail_unit(run, loop, unit, error)
        return [b for b in queue if b[0].checkpoint != name]
    run.timings[f"load:{name}"] = time.perf_counter() - t0
    return queue


def _load_pipeline(run: _Run, name: str):
    from evaluator.generation.checkpoints import load_pipeline

    config = run.config
    pipe = load_pipeline(
        run.specs[name], run.specs, device=run.device, dtype=config.dtype, allow_pickle=config.allow_pickle,
        attention=config.attention, offline=config.offline,
    )
    if config.compile:
        import torch

        pipe.unet = torch.compile(pipe.unet)
    return pipe


def _fit_batch(batch: list[WorkUnit], queue: list, size: int) -> list[WorkUnit]:
    """A batch larger than what fits after an out-of-memory is cut; the rest is queued first."""
    if len(batch) > size:
        queue[0:0] = [batch[i : i + size] for i in range(size, len(batch), size)]
        batch = batch[:size]
    return batch


def _run_batch(run: _Run, loop: _BatchLoop, batch: list[WorkUnit]) -> None:
    """One pipeline call (halved on out-of-memory); the images go to the writer pool."""
    from evaluator.generation.checkpoints import set_scheduler

    name = batch[0].checkpoint
    spec = run.specs[name]
    sampler = _apply_scheduler(loop.pipe, batch[0].scheduler, spec, set_scheduler)
    t0 = time.perf_counter()
    results = run_with_backoff(batch, functools.partial(_generate_batch, loop.pipe), on_oom=loop.shrink)
    per_image = (time.perf_counter() - t0) / max(1, len(batch))
    for unit, pixels, error in results:
        if error is None and isinstance(pixels, Exception):
            error = str(pixels)
        if error is not None:
            _fail_unit(run, loop, unit, error, seconds=per_image)
            continue
        parameters = _parameters(unit, sampler, run.fingerprints[name], spec)
        future = loop.pool.submit(_write_image, run.wd, unit, pixels, parameters, run.config, run.run_id, per_image)
        loop.pending.append((unit, future))


def _fail_unit(run: _Run, loop: _BatchLoop, unit: WorkUnit, error: str, seconds: float | None = None) -> None:
    run.writer.add(image_record(unit, run.run_id, error=error, seconds=seconds))
    run.summary.count_failure(unit.unit_id, error)
    loop.bar.update(1)


def _drain(run: _Run, loop: _BatchLoop, everything: bool) -> None:
    """Record the images the writer pool has finished (every one when ``everything``)."""
    for item in list(loop.pending):
        unit, future = item
        if everything or future.done():
            loop.pending.remove(item)  # before a raise: the final drain must not record it again
            run.writer.add(_written_record(run, unit, future))
            loop.bar.update(1)


def _written_record(run: _Run, unit: WorkUnit, future) -> dict:
    """The record of one written image, or of its failure; a disk that refuses writes stops the run."""
    try:
        record = future.result()
    except OSError as exc:
        # Disk full, read-only or a file where a folder should be: the workdir's fault,
        # not the unit's. Stop, and record no failure that a rerun would skip (records
        # of images already written are kept).
        raise GenerateError(
            f"cannot write {run.wd.images / unit.relpath()}: {type(exc).__name__}: {exc}; "
            "free space or fix permissions and rerun (nothing is recorded as failed)"
        ) from exc
    except Exception as exc:
        error = f"writing the image failed: {type(exc).__name__}: {exc}"
        run.summary.count_failure(unit.unit_id, error)
        return image_record(unit, run.run_id, error=error)
    run.summary.done += 1
    return record


def _apply_scheduler(pipe, unit_scheduler: str, spec, set_scheduler) -> str:
    """The unit's scheduler, or the checkpoint's, or the pipeline's own ("default")."""
    wanted = unit_scheduler if unit_scheduler != "default" else (spec.scheduler or "default")
    if getattr(pipe, "_atelier_scheduler", None) is None:
        pipe._atelier_original_scheduler = pipe.scheduler
    if wanted == getattr(pipe, "_atelier_scheduler", None):
        return pipe._atelier_sampler
    pipe.scheduler = pipe._atelier_original_scheduler
    label = set_scheduler(pipe, wanted)
    pipe._atelier_scheduler, pipe._atelier_sampler = wanted, label
    return label


def _generate_batch(pipe, units: list[WorkUnit]) -> list:
    """One pipeline call for units sharing settings; per-unit CPU generators."""
    import torch

    first = units[0]
    generators = [torch.Generator("cpu").manual_seed(int(u.seed)) for u in units]
    with torch.inference_mode():
        output = pipe(
            **_prompt_arguments(pipe, units),
            num_inference_steps=first.steps,
            guidance_scale=float(first.guidance),
            width=first.width,
            height=first.height,
            generator=generators,
            output_type="np",
        )
    return images_to_uint8(output.images)


def _prompt_arguments(pipe, units: list[WorkUnit]) -> dict:
    """The prompts as text when they have no A1111 syntax (the path every plain prompt has
    always taken), else embeddings weighted and switched per step (generation.weighting)."""
    from evaluator.generation.weighting import plain_prompt, weighted_call_arguments

    first = units[0]
    plain = [plain_prompt(u.prompt) for u in units]
    negative = plain_prompt(first.negative_prompt) if first.negative_prompt else ""
    if all(p is not None for p in plain) and negative is not None:
        return {"prompt": plain, "negative_prompt": [negative] * len(units) if negative else None}
    return weighted_call_arguments(pipe, [u.prompt for u in units], first.negative_prompt, first.steps)


def _parameters(unit: WorkUnit, sampler: str, fp: dict, spec) -> str:
    """The A1111 infotext of a generated image (model hash: the quick fingerprint's head)."""
    model_hash = fp["fingerprint"].split(";")[0].split(":", 1)[1][:10]
    extra = {}
    if spec.lora:
        extra["Lora hashes"] = ", ".join(f"{a.path.stem}: {a.scale:g}" for a in spec.lora)
    extra["Version"] = "atelier"
    return InfotextParams(
        unit.prompt, unit.negative_prompt, unit.steps, sampler, float(unit.guidance), unit.seed,
        unit.width, unit.height, model_hash=model_hash, model=unit.checkpoint, extra=extra,
    ).text()


def _write_run_record(run: _Run, status: str, message: str | None) -> None:
    """``runs/<run_id>.json`` (``<run_id>.rank<R>.json`` per rank of a launch)."""
    from evaluator.generation.checkpoints import torch_dtype

    config, summary = run.config, run.summary
    try:
        dtype = str(torch_dtype(config.dtype, run.device)).removeprefix("torch.")
    except Exception:
        dtype = config.dtype
    RunRecord(
        run_id=run.run_id,
        kind="generate",
        provenance=Provenance.collect(run.device, dtype),
        started_at=run.started,
        finished_at=utcnow(),
        status=status,
        config={**asdict(config), "checkpoints": {k: v["fingerprint"] for k, v in run.fingerprints.items()}},
        timings={k: round(v, 4) for k, v in run.timings.items()},
        n_done=summary.done + summary.recovered,
        n_skipped=summary.skipped,
        n_failed=summary.failed,
        message=message,
        rank=run.env.rank,
        world_size=run.env.world_size,
    ).write(run.wd)
