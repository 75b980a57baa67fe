"""`atelier curate`: one run over a source, in five numbered steps.

1. resolve: thresholds, source (folder or store), models — every refusal before any work;
2. pixels: each file's bytes hashed and, unless its content was curated with the same
   models, decoded and measured in a process pool (``signals.pool_task``); the main
   process runs the watermark detector on batches as they arrive, overlapping decode;
3. embeddings: the CLIP embeddings of new contents (stored ones reused), their aesthetic;
4. set-level: duplicate groups over the whole source (new and earlier contents), the
   outlier scores, every flag from the stored signals and this run's thresholds;
5. write: new ``curation`` rows, the source's ``curation_files`` rows (replaced whole)
   and the run's ``runs`` row, in one transaction; then the summary.

A rerun with the same models skips every content already curated (keyed by SHA-256, so a
renamed file is not recomputed) and only redoes step 4: changed thresholds apply at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.curation.config import REASONS, Thresholds
from evaluator.curation.models import CurationModels, ModelOptions, resolve_models
from evaluator.curation.signals import FileSignals, WorkerOptions
from evaluator.curation.sources import Item, Source, folder_source, store_source
from evaluator.workspace.records import utcnow
from evaluator.workspace.workdir import Workdir

# What a worker imports, loaded once by the fork server before it forks the workers.
WORKER_MODULES = ("imwatermark", "imagehash", "cv2", "evaluator.ingest.importer", "evaluator.curation.signals",
                  "evaluator.curation.sdmark")


@dataclass(frozen=True)
class CurateOptions:
    thresholds: Thresholds = field(default_factory=Thresholds)
    models: ModelOptions = field(default_factory=ModelOptions)
    # Decoding + the SD-mark read are the cost (~1 s per 1024^2 image); one process per core.
    workers: int = 2
    batch_size: int = 16  # images per detector / CLIP call
    progress: bool = True


@dataclass
class CurateSummary:
    run_id: str
    source: str
    n_files: int = 0
    n_computed: int = 0  # contents whose signals were computed now
    n_skipped: int = 0  # files whose content was curated before
    counts: dict[str, int] = field(default_factory=dict)  # flag -> files
    n_kept: int = 0  # files with no flag
    notices: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def report_lines(self) -> list[str]:
        lines = [f"curate {self.source}: {self.n_files} files, {self.n_computed} computed, "
                 f"{self.n_skipped} already curated; {self.n_kept} kept (no flag)"]
        lines += [f"  {code}: {self.counts.get(code, 0)}" for code in REASONS]
        lines += [f"  note: {n}" for n in self.notices]
        if self.ignored:
            lines.append(f"  {len(self.ignored)} non-image files ignored: {', '.join(self.ignored[:5])}")
        return lines


@dataclass
class _Run:
    wd: Workdir
    source: Source
    options: CurateOptions
    models: CurationModels
    summary: CurateSummary
    started: Any
    new: dict[str, dict] = field(default_factory=dict)  # sha256 -> new content row
    files: list[tuple[Item, str]] = field(default_factory=list)  # (item, sha256)


def curate(src: Path | None, workdir: str | Path, *, labels_csv: Path | None = None,
           options: CurateOptions | None = None) -> CurateSummary:
    """Curate ``src`` (None: the workdir's stored images) into the ``curation`` tables."""
    options = options or CurateOptions()
    run = _resolve(src, workdir, labels_csv, options)  # 1.
    _pixels(run)  # 2.
    _embeddings(run)  # 3.
    from evaluator.curation.write import write_run  # 4. + 5.

    write_run(run)
    return run.summary


def _resolve(src: Path | None, workdir: str | Path, labels_csv: Path | None, options: CurateOptions) -> _Run:
    from evaluator.errors import InputError

    options.thresholds.validate()
    if options.workers < 0 or options.batch_size < 1:
        raise InputError(f"workers must be >= 0 and batch size >= 1 (got {options.workers}, {options.batch_size})")
    wd = Workdir.at(workdir)
    source = store_source(wd) if src is None else folder_source(Path(src), labels_csv, wd)
    models = resolve_models(options.models)
    run_id = f"curate-{utcnow().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    summary = CurateSummary(run_id, source.name, n_files=len(source.items), notices=list(models.notices),
                            ignored=source.ignored)
    if source.unlabelled:
        summary.notices.append(f"{source.unlabelled} files have no labels row (no artist: no outlier score)")
    for name in source.labels_missing[:20]:
        summary.notices.append(f"labels name a missing file: {name}")
    return _Run(wd, source, options, models, summary, utcnow())


def _done_contents(run: _Run) -> frozenset[str]:
    """Contents already curated with this run's models (their signals are reused)."""
    from evaluator.workspace.store import connect_read_only

    if not run.wd.store.is_file():
        return frozenset()
    con = connect_read_only(run.wd.store)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "curation" not in tables:
            return frozenset()
        rows = con.execute("SELECT sha256 FROM curation WHERE signals_key = ?", [run.models.signals_key]).fetchall()
    finally:
        con.close()
    return frozenset(r[0] for r in rows)


def _pixels(run: _Run) -> None:
    """Step 2: the pool over the files; detector batches in the main process as results come."""
    from tqdm import tqdm

    options = WorkerOptions(done=_done_contents(run), detector_input=run.models.detector is not None)
    pending: list[FileSignals] = []
    bar = tqdm(total=len(run.source.items), desc="curate", unit="img", disable=not run.options.progress)
    for result, item in zip(_signals(run, options), run.source.items, strict=True):
        bar.update(1)
        run.files.append((item, result.sha256))
        if result.skipped or result.sha256 in run.new:
            run.summary.n_skipped += result.skipped
            continue
        run.new[result.sha256] = _content_row(result, item, run)
        if result.detector_input is not None:
            pending.append(result)
            if len(pending) >= run.options.batch_size:
                _detect(run, pending)
    _detect(run, pending)
    bar.close()
    run.summary.n_computed = len(run.new)


def _signals(run: _Run, options: WorkerOptions):
    """FileSignals in the source's order: a process pool, or in-process with 0 workers."""
    from evaluator.curation.signals import file_signals, init_worker, pool_task

    jobs = [(str(item.path), item.key) for item in run.source.items]
    if run.options.workers == 0 or len(jobs) < 2:
        yield from (file_signals(Path(p), k, options) for p, k in jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # invisible-watermark's package imports torch (for its rivaGan method): ~10 s and 0.7 GB
    # per spawned process. A fork server imports it once and forks the workers from that
    # clean process. Forking this process instead can deadlock: OpenCV's or OpenMP's
    # threads may already have run here (a library caller, the benchmark's naive loop).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(list(WORKER_MODULES))
    with ProcessPoolExecutor(run.options.workers, mp_context=context, initializer=init_worker,
                             initargs=(options,)) as pool:
        yield from pool.map(pool_task, jobs, chunksize=max(1, min(8, len(jobs) // (4 * run.options.workers))))


def _content_row(result: FileSignals, item: Item, run: _Run) -> dict:
    width, height = result.width, result.height
    return {
        "sha256": result.sha256, "file_bytes": result.file_bytes, "width": width, "height": height,
        "megapixels": (width * height / 1e6) if width else None, "error": result.error,
        "phash": result.phash, "phash_centre": result.phash_centre, "sd_mark": result.sd_mark,
        "sd_mark_agreement": result.sd_mark_agreement, "sd_mark_reason": result.sd_mark_reason,
        "watermark_prob": None, "watermark_model": run.models.detector.key if run.models.detector else None,
        "aesthetic": None, "aesthetic_head": run.models.head.spec.name if run.models.head else None,
        "embedding_model": run.models.clip_key, "embedding": None,
        "artist_id": item.artist_id, "caption": item.caption or result.caption,
        "signals_key": run.models.signals_key, "_path": item.path, "_image_id": item.image_id,
    }


def _detect(run: _Run, pending: list[FileSignals]) -> None:
    import numpy as np

    if not pending:
        return
    probs = run.models.detector.probabilities(np.stack([r.detector_input for r in pending]))
    for result, p in zip(pending, probs, strict=True):
        run.new[result.sha256]["watermark_prob"] = float(p)
    pending.clear()


def _embeddings(run: _Run) -> None:
    """Step 3: embeddings of the new readable contents (the store's own when it has them)."""
    import numpy as np

    if run.models.clip_key is None:
        return
    rows = [r for r in run.new.values() if r["error"] is None]
    stored = _stored_vectors(run, rows)
    todo = [r for r in rows if r["sha256"] not in stored]
    for start in range(0, len(todo), run.options.batch_size):
        from evaluator.embedding.images import embed_image_files

        batch = todo[start:start + run.options.batch_size]
        vecs = embed_image_files(run.models.clip(), [r["_path"] for r in batch])
        stored.update({r["sha256"]: v for r, v in zip(batch, vecs, strict=True)})
    for row in rows:
        vec = np.asarray(stored[row["sha256"]], dtype=np.float32)
        row["embedding"] = (vec / max(float(np.linalg.norm(vec)), 1e-12)).tolist()
    if run.models.head is not None and rows:
        scores = run.models.head.score(np.array([r["embedding"] for r in rows]))
        for row, score in zip(rows, scores, strict=True):
            row["aesthetic"] = float(score)


def _stored_vectors(run: _Run, rows: list[dict]) -> dict[str, Any]:
    """sha256 -> the embedding `atelier embed` stored for that image (``--from-store``)."""
    ids = {r["_image_id"]: r["sha256"] for r in rows if r["_image_id"] is not None}
    if not ids:
        return {}
    from evaluator.embedding.images import load_embeddings

    found_ids, vecs = load_embeddings(run.wd, run.models.clip_key, ids=list(ids))
    return {ids[int(i)]: v for i, v in zip(found_ids, vecs, strict=True)}
