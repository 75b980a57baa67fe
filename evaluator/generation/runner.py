"""The generation runner: work units in, PNG images + thumbnails + manifest shards out.

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

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from catalog.units import WorkUnit, shard
from evaluator.errors import StateError
from evaluator.workspace.records import git_revision, package_versions
from evaluator.workspace.workdir import Workdir

PNG_TRAILER = b"\x00\x00\x00\x00IEND\xaeB`\x82"


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
            raise ValueError(f"batch_size must be an integer >= 1 but is {self.batch_size!r}")
        if self.part_every < 1:
            raise ValueError(f"part_every must be >= 1 but is {self.part_every}")
        if self.thumb_size < 8:
            raise ValueError(f"thumb_size must be >= 8 but is {self.thumb_size}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 but is {self.limit}")
        if self.attention not in ("sdpa", "default"):
            raise ValueError(f"attention must be 'sdpa' or 'default' but is {self.attention!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps", "xpu"))):
            raise ValueError(f"device must be cpu, cuda, cuda:N, mps or xpu but is {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 but is {self.threads}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be in [0, 9] but is {self.png_compress_level}")


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

    def line(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size}: {self.done} made, {self.skipped} skipped, "
            f"{self.recovered} recovered, {self.failed} failed in {self.seconds:.1f}s "
            f"({self.images_per_s:.2f} images/s); run {self.run_id}"
        )


class GenerateError(StateError):
    """The run cannot start (bad units, checkpoints, or a changed checkpoint)."""


# ------------------------------------------------------------------ helpers


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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
        return f"gen-{_utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    digest = hashlib.sha256()
    for unit in units:
        digest.update(unit.unit_id.encode())
    for name, value in settings.launcher().rendezvous:
        digest.update(f"{name}={value};".encode())
    digest.update(str(world_size).encode())
    return f"gen-{digest.hexdigest()[:12]}"


def png_is_complete(path: Path) -> bool:
    """A PNG that ends with its IEND chunk (cheap: reads 12 bytes, no decoding)."""
    try:
        size = path.stat().st_size
        if size < 57:  # signature + IHDR + IDAT + IEND
            return False
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            handle.seek(size - 12)
            return handle.read(12) == PNG_TRAILER
    except OSError:
        return False


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


def _record(unit: WorkUnit, run_id: str, **fields) -> dict:
    record = {
        "image_id": unit.image_id,
        "unit_id": unit.unit_id,
        "source": "generated",
        "checkpoint": unit.checkpoint,
        "artist_id": unit.artist_id,
        "template": unit.template,
        "prompt": unit.prompt,
        "negative_prompt": unit.negative_prompt,
        "seed": unit.seed,
        "width": unit.width,
        "height": unit.height,
        "steps": unit.steps,
        "guidance": float(unit.guidance),
        "scheduler": unit.scheduler,
        "path": None,
        "thumb_path": None,
        "sha256": None,
        "seconds": None,
        "error": None,
        "run_id": run_id,
        "created_at": _utcnow(),
    }
    record.update(fields)
    return record


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
    return _record(
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
    return _record(unit, run_id, path=relpath.as_posix(), thumb_path=thumb_rel.as_posix(), sha256=hashlib.sha256(data).hexdigest())


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
    from evaluator.generation.checkpoints import load_checkpoints
    from evaluator.generation.distributed import device_for, dist_env

    config = config or GenerateConfig()
    config.validate()
    env = dist_env(rank, world_size)
    wd = Workdir.at(workdir)
    started = _utcnow()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    specs = load_checkpoints(checkpoints_file, allow_pickle=config.allow_pickle)
    unique: dict[str, WorkUnit] = {}
    for unit in units:
        unique.setdefault(unit.unit_id, unit)
    all_units = list(unique.values())
    validate_units(all_units, specs)
    run_id = run_id_for(all_units, env.world_size, config.run_id)
    names = list(dict.fromkeys(u.checkpoint for u in all_units))
    t0 = time.perf_counter()
    fingerprints = check_and_record_checkpoints(names, specs, wd, config, write=env.is_main)
    timings["fingerprint"] = time.perf_counter() - t0

    mine = shard(all_units, env.rank, env.world_size)
    todo, recover, skipped = plan_work(mine, wd, config.retry_failed)
    if config.limit is not None:
        todo = todo[: config.limit]
    summary = GenerateSummary(run_id=run_id, rank=env.rank, world_size=env.world_size, total=len(mine), skipped=skipped)
    device = device_for(config.device, env)
    run_dir = wd.manifests / run_id
    writer = _ManifestWriter(run_dir, env.rank)
    status, message = "ok", None
    previous_threads = None
    if config.threads is not None and todo:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
    try:
        for unit in recover:
            writer.add(_recover_record(wd, unit, run_id, config))
            summary.recovered += 1
        writer.flush()
        t_gen = time.perf_counter()
        _run_batches(todo, specs, wd, config, device, run_id, writer, summary, timings, fingerprints, env)
        timings["generate"] = time.perf_counter() - t_gen
    except BaseException as exc:
        status, message = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
        writer.flush()
        summary.seconds = time.perf_counter() - t_start
        made = timings.get("generate", 0.0)
        summary.images_per_s = summary.done / made if made > 0 else 0.0
        summary.manifest_parts = writer.paths
        timings["total"] = summary.seconds
        if status == "ok" and summary.failed:
            status = "failed-units"
        # A rerun with nothing to do leaves no trace (no empty run rows in the store).
        if status != "ok" or summary.done or summary.recovered or summary.failed:
            _write_run_record(wd, run_id, env, config, started, device, timings, summary, status, message, fingerprints)
    return summary


def _run_batches(todo, specs, wd, config, device, run_id, writer, summary, timings, fingerprints, env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from evaluator.generation.checkpoints import CheckpointError, load_pipeline, set_scheduler

    batches = make_batches(todo, config.batch_size)
    bar = tqdm(
        total=len(todo), unit="img", desc=f"generate r{env.rank}" if env.world_size > 1 else "generate",
        disable=not config.progress or not todo, position=env.rank if env.world_size > 1 else None,
        dynamic_ncols=True, smoothing=0.1,
    )
    pool = ThreadPoolExecutor(max_workers=max(1, config.writer_threads), thread_name_prefix="atelier-png")
    pending: list = []
    batch_size = {"value": config.batch_size}
    pipe = None
    current = None
    batches_since_flush = 0

    def drain(all_of_them: bool) -> None:
        for item in list(pending):
            unit, future = item
            if all_of_them or future.done():
                pending.remove(item)  # before a raise: the final drain must not record it again
                try:
                    record = future.result()
                    summary.done += 1
                except OSError as exc:
                    # Disk full, read-only or a file where a folder should be: the
                    # workdir's fault, not the unit's. Stop, and record no failure that
                    # a rerun would skip (records of images already written are kept).
                    raise GenerateError(
                        f"cannot write {wd.images / unit.relpath()}: {type(exc).__name__}: {exc}; "
                        "free space or fix permissions and rerun (nothing is recorded as failed)"
                    ) from exc
                except Exception as exc:
                    record = _record(unit, run_id, error=f"writing the image failed: {type(exc).__name__}: {exc}")
                    summary.failed += 1
                    summary.errors[unit.unit_id] = record["error"]
                writer.add(record)
                bar.update(1)

    try:
        queue = list(batches)
        while queue:
            batch = queue.pop(0)
            name = batch[0].checkpoint
            if name != current:
                drain(True)
                if pipe is not None:  # release the previous checkpoint before loading the next
                    pipe = None
                    _free_memory()
                t0 = time.perf_counter()
                try:
                    pipe = load_pipeline(
                        specs[name], specs, device=device, dtype=config.dtype, allow_pickle=config.allow_pickle,
                        attention=config.attention, offline=config.offline,
                    )
                    if config.compile:
                        import torch

                        pipe.unet = torch.compile(pipe.unet)
                except CheckpointError as exc:
                    pipe = None
                    error = f"checkpoint failed to load: {exc}"
                    bar.write(f"error: {error}")
                    for other in [batch] + [b for b in queue if b[0].checkpoint == name]:
                        for unit in other:
                            writer.add(_record(unit, run_id, error=error))
                            summary.failed += 1
                            summary.errors[unit.unit_id] = error
                            bar.update(1)
                    queue = [b for b in queue if b[0].checkpoint != name]
                    current = name
                    continue
                timings[f"load:{name}"] = time.perf_counter() - t0
                current = name
            if pipe is None:
                continue
            # A batch larger than what fits after an OOM is split before running.
            size = batch_size["value"]
            if len(batch) > size:
                queue[0:0] = [batch[i : i + size] for i in range(size, len(batch), size)]
                batch = batch[:size]
            spec = specs[name]
            sampler = _apply_scheduler(pipe, batch[0].scheduler, spec, set_scheduler)
            t0 = time.perf_counter()

            def run(units_: list[WorkUnit], _pipe=pipe) -> list:
                return _generate_batch(_pipe, units_)

            def shrink(half: int) -> None:
                batch_size["value"] = min(batch_size["value"], half)
                bar.write(f"out of memory: batch size now {batch_size['value']}")

            results = run_with_backoff(batch, run, on_oom=shrink)
            per_image = (time.perf_counter() - t0) / max(1, len(batch))
            for unit, pixels, error in results:
                if error is None and isinstance(pixels, Exception):
                    error = str(pixels)
                if error is not None:
                    writer.add(_record(unit, run_id, error=error, seconds=per_image))
                    summary.failed += 1
                    summary.errors[unit.unit_id] = error
                    bar.update(1)
                    continue
                parameters = _parameters(unit, sampler, fingerprints[name], spec)
                pending.append((unit, pool.submit(_write_image, wd, unit, pixels, parameters, config, run_id, per_image)))
            drain(False)
            batches_since_flush += 1
            if batches_since_flush >= config.part_every:
                drain(True)
                writer.flush()
                batches_since_flush = 0
        drain(True)
    finally:
        drain(True)
        pool.shutdown(wait=True)
        bar.close()


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
            prompt=[u.prompt for u in units],
            negative_prompt=[first.negative_prompt] * len(units) if first.negative_prompt else None,
            num_inference_steps=first.steps,
            guidance_scale=float(first.guidance),
            width=first.width,
            height=first.height,
            generator=generators,
            output_type="np",
        )
    return images_to_uint8(output.images)


def _parameters(unit: WorkUnit, sampler: str, fp: dict, spec) -> str:
    from evaluator.generation.pngmeta import format_parameters

    model_hash = fp["fingerprint"].split(";")[0].split(":", 1)[1][:10]
    extra = {}
    if spec.lora:
        extra["Lora hashes"] = ", ".join(f"{a.path.stem}: {a.scale:g}" for a in spec.lora)
    extra["Version"] = "atelier"
    return format_parameters(
        unit.prompt, unit.negative_prompt, unit.steps, sampler, float(unit.guidance), unit.seed,
        unit.width, unit.height, model_hash=model_hash, model=unit.checkpoint, extra=extra,
    )


def _write_run_record(wd, run_id, env, config, started, device, timings, summary, status, message, fingerprints) -> None:
    from catalog.atomic import atomic_write_text
    from evaluator.generation.checkpoints import torch_dtype

    try:
        dtype = str(torch_dtype(config.dtype, device)).removeprefix("torch.")
    except Exception:
        dtype = config.dtype
    record = {
        "run_id": run_id,
        "kind": "generate",
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": _utcnow().isoformat(timespec="seconds"),
        "status": status,
        "config": json.dumps({**asdict(config), "checkpoints": {k: v["fingerprint"] for k, v in fingerprints.items()}}),
        "versions": json.dumps(package_versions()),
        "git_rev": git_revision(),
        "device": device,
        "dtype": dtype,
        "timings": json.dumps({k: round(v, 4) for k, v in timings.items()}),
        "n_done": summary.done + summary.recovered,
        "n_skipped": summary.skipped,
        "n_failed": summary.failed,
        "host": socket.gethostname(),
        "message": message,
        "rank": env.rank,
        "world_size": env.world_size,
    }
    name = f"{run_id}.json" if env.world_size == 1 else f"{run_id}.rank{env.rank}.json"
    atomic_write_text(wd.runs / name, json.dumps(record, indent=2))
