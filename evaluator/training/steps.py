"""What happens at each saved step: records, a checkpoint name, validation images, figures.

``on_saved_step(SavedStep(...))`` is called by the training loop (rank 0) once a
``step-NNNNNN/`` folder is complete. Reads the step's weights, the dataset images and
the base's checkpoints TOML; writes ``DIR/training/checkpoints.toml``,
``DIR/checkpoints/<name>.json``, the validation images (through the generation runner:
``images/``, ``thumbs/``, ``manifests/``, ``runs/``), the held-out images as references
(through the importer: ``imported/``, ``reference_images``) and the store's ``training_*`` rows.
Five numbered steps:

1. record the run and its split (``training_runs``, ``training_split``; once per run), and
   import the held-out images as the concept's reference works (``reference_images``);
2. register the step as checkpoint ``<output_name>@step-NNNNNN`` whose ``base`` is the
   training base: a table in the workdir's own checkpoints file (with a copy of the base's
   tables), which ``atelier generate`` merges with the user's file, and the workdir's
   checkpoint record (fingerprint, adapters), which ``atelier score`` reads, so
   ``atelier score --compare BASE:<output_name>@step-NNNNNN`` works unchanged;
3. generate ``validation_prompts`` x ``validation_seeds`` with the step and with the base
   (the base's images are made once and then skipped), as images of those checkpoints;
4. compute the validation figures (``evaluator.training.validation``), and once per run
   the base's own as step 0 (where the curves start);
5. write ``training_steps``, ``training_images``, ``training_metrics`` and
   ``training_memorization`` in one transaction.

A failure in 3 or 4 is recorded (``training_steps.validation_status`` / ``validation_error``,
metric rows with a reason) and returned, never raised: training goes on. Calling it twice
for one step (a resume after a kill inside it) writes the same rows again, never twice.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog.units import WorkUnit
    from evaluator.generation.checkpoints import CheckpointSpec
    from evaluator.training.dataset import TrainingDataset
    from evaluator.training.split import Split
    from evaluator.training.validation import GeneratedImage, StepFigures
    from evaluator.workspace.workdir import Workdir

VALIDATION_TEMPLATE = "validation"
# Sampler settings of validation images when the config does not say (SD's usual ones).
DEFAULT_INFERENCE_STEPS = 25
DEFAULT_GUIDANCE = 7.5


def step_checkpoint_name(output_name: str, step: int) -> str:
    """``<output_name>@step-NNNNNN``: the checkpoint name of a saved step."""
    return f"{output_name}@step-{int(step):06d}"


@dataclass
class SavedStep:
    """Everything the loop knows about one saved step."""

    workdir: Path
    config: Any  # TrainingConfig
    output_name: str
    step: int
    step_dir: Path
    train_loss: float | None
    val_loss: float | None
    lr: float | None
    seconds: float | None
    split: Split
    method: str
    weights: list[Path]
    run_id: str
    base: CheckpointSpec
    dataset: TrainingDataset | None = None
    checkpoint_name: str | None = None  # set only for step 0, the base itself

    @property
    def checkpoint(self) -> str:
        return self.checkpoint_name or step_checkpoint_name(self.output_name, self.step)


@dataclass
class StepReport:
    """What ``on_saved_step`` did; ``errors`` says what failed in validation (nothing raised)."""

    checkpoint: str
    images: int = 0
    failed_images: int = 0
    figures: dict[str, float | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def validation_status(self) -> str:
        return "ok" if not self.errors else "failed"

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in self.figures.items() if v is not None)
        tail = f"; validation problems: {'; '.join(self.errors)}" if self.errors else ""
        return f"{self.checkpoint}: {self.images} validation images{', ' + shown if shown else ''}{tail}"


# ------------------------------------------------------------------ 1. the run and its split


def record_run(saved: SavedStep) -> bool:
    """``training_runs`` and ``training_split`` rows of the step's run, once per run; True
    when written now (False: an earlier step of the run wrote them)."""
    import pandas as pd

    from evaluator.workspace.store import open_store, transaction, upsert_df

    config = saved.config
    config_json = json.dumps(_config_dict(config), sort_keys=True, default=str)
    dataset = saved.dataset
    run = pd.DataFrame([{
        "run": saved.run_id, "output_name": saved.output_name, "method": saved.method, "base": saved.base.name,
        "config": config_json, "dataset": str(dataset.source) if dataset else getattr(config, "dataset", None),
        "dataset_fingerprint": dataset.fingerprint if dataset else None,
        "n_train": len(saved.split.train), "n_validation": len(saved.split.validation),
    }])
    split = pd.DataFrame([{"run": saved.run_id, "sha256": r["sha256"], "path": r["path"], "side": r["side"],
                           "group_key": r["group"]} for r in saved.split.rows()])
    with open_store(Path(saved.workdir) / "atelier.duckdb") as con, transaction(con):
        if con.execute("SELECT 1 FROM training_runs WHERE run = ?", [saved.run_id]).fetchone():
            return False  # written whole at an earlier step of this run (a run's config and split do not change)
        upsert_df(con, "training_runs", run, key=["run"])
        upsert_df(con, "training_split", split, key=["run", "sha256"])
    return True


def _references_missing(saved: SavedStep) -> bool:
    """Whether some held-out image is not a reference work of its concept in the store yet."""
    from evaluator.workspace.store import connect

    wanted = {(i.sha256, i.concept_id) for i in saved.split.validation}
    con = connect(Path(saved.workdir) / "atelier.duckdb", read_only=True)
    try:
        have = set(con.execute(
            "SELECT i.source_sha256, r.artist_id FROM reference_images r JOIN images i USING (image_id) "
            "WHERE i.source = 'reference'").fetchall())
    finally:
        con.close()
    return not wanted <= have


def register_references(saved: SavedStep) -> int:
    """Import the held-out images as reference works of their concept (``reference_images``),
    so ``atelier score`` measures reference similarity and retrieval on the step's images
    with the same references as the step figures. Returns the files imported now.

    A concept is not a catalog artist, and references must belong to one: the importer
    is given the fine-tune's own catalog, ``DIR/training/<output_name>/concepts.csv`` (one
    row per concept, written here). The importer reads a folder and refuses links, so the
    held-out files are copied to a temporary folder first, named by content hash: a rerun
    imports nothing new.
    """
    import csv
    import shutil
    import tempfile

    from catalog.model import Artist, write_catalog
    from evaluator.ingest.importer import import_images

    concepts = {i.concept_id: i.concept for i in list(saved.split.train) + list(saved.split.validation)}
    catalog = Path(saved.workdir) / "training" / saved.output_name / "concepts.csv"
    catalog.parent.mkdir(parents=True, exist_ok=True)
    write_catalog([Artist(cid, name, sources=("atelier-train",), notes=f"a concept of fine-tune {saved.output_name}")
                   for cid, name in sorted(concepts.items())], catalog)
    with tempfile.TemporaryDirectory(prefix="atelier-heldout-") as tmp:
        folder = Path(tmp) / "heldout"
        folder.mkdir()
        with open(Path(tmp) / "labels.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "artist"])
            for item in saved.split.validation:
                name = f"{item.sha256[:16]}{item.path.suffix.lower()}"
                shutil.copyfile(item.path, folder / name)
                writer.writerow([name, item.concept_id])
        summary = import_images(folder, saved.workdir, labels_csv=Path(tmp) / "labels.csv", as_reference=True,
                                catalog_path=catalog, progress=False)
    return summary.imported


def _config_dict(config: Any) -> dict:
    import dataclasses

    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(vars(config)) if config is not None else {}


# ------------------------------------------------------------------ 2. the step as a checkpoint


def spec_table(spec: CheckpointSpec) -> dict:
    """A CheckpointSpec as a ``[[checkpoint]]`` table (absolute paths, so it reads anywhere)."""
    table: dict[str, Any] = {"name": spec.name}
    if spec.source_type != "inherit":
        table["source"] = spec.source
    for key in ("kind", "base", "dtype", "scheduler"):
        if getattr(spec, key):
            table[key] = getattr(spec, key)
    if spec.notes:
        table["notes"] = spec.notes
    if spec.config is not None:
        table["config"] = str(spec.config)
    if spec.lora:
        table["lora"] = [{"path": str(a.path), "scale": a.scale} for a in spec.lora]
    if spec.textual_inversion:
        table["textual_inversion"] = [{"path": str(t.path), "token": t.token} for t in spec.textual_inversion]
    return table


def _base_chain(saved: SavedStep) -> list[CheckpointSpec]:
    """The base and every checkpoint it inherits from (from the config's checkpoints TOML)."""
    from evaluator.generation.checkpoints import load_checkpoints

    chain, spec = [saved.base], saved.base
    specs = None
    while spec.base is not None:
        if specs is None:
            specs = load_checkpoints(spec.file) if spec.file is not None else {}
        if spec.base not in specs:
            break
        spec = specs[spec.base]
        chain.append(spec)
    return chain


def step_table(saved: SavedStep) -> dict:
    """The step's ``[[checkpoint]]`` table: the base's weights plus this step's adapter."""
    by_name = {Path(w).name: Path(w) for w in saved.weights}
    name, base = saved.checkpoint, saved.base.name
    notes = f"atelier train run {saved.run_id}, step {saved.step} ({saved.method})"
    if saved.method == "lora":
        lora = by_name.get("pytorch_lora_weights.safetensors") or saved.weights[0]
        return {"name": name, "base": base, "lora": [{"path": str(lora), "scale": 1.0}], "notes": notes}
    if saved.method == "textual_inversion":
        embeds = by_name.get("learned_embeds.safetensors") or saved.weights[0]
        token = getattr(saved.config, "placeholder_token", "")
        return {"name": name, "base": base, "textual_inversion": [{"path": str(embeds), "token": token}], "notes": notes}
    folder = next((w for w in saved.weights if (Path(w) / "model_index.json").is_file()), saved.weights[0])
    table = {"name": name, "source": str(folder), "base": base, "notes": notes}
    if saved.base.kind:
        table["kind"] = saved.base.kind
    return table


def register_step(saved: SavedStep) -> Path:
    """Add (or replace) the step's table in ``DIR/training/checkpoints.toml``; return the file.

    The base's tables are refreshed from the spec the run trained on, so the file always
    reads alone. Written atomically; other steps' tables are kept.
    """
    import tomllib

    import tomli_w

    from catalog.atomic import atomic_write_text
    from evaluator.generation.checkpoints import WORKDIR_CHECKPOINTS, load_checkpoints

    file = Path(saved.workdir) / WORKDIR_CHECKPOINTS
    tables: dict[str, dict] = {}
    if file.is_file():
        tables = {t["name"]: t for t in tomllib.loads(file.read_text(encoding="utf-8")).get("checkpoint", [])}
    for spec in reversed(_base_chain(saved)):  # bases before what builds on them
        tables[spec.name] = spec_table(spec)
    tables[saved.checkpoint] = step_table(saved)
    text = "# Written by `atelier train`: its saved steps as checkpoints (and their bases).\n"
    text += "# `atelier generate` merges this file with yours; edits here are overwritten.\n"
    text += tomli_w.dumps({"checkpoint": list(tables.values())})
    atomic_write_text(file, text)
    load_checkpoints(file)  # what was written must read back (refuses a broken table now, not later)
    return file


def record_step_checkpoint(wd: Workdir, checkpoints_file: Path, names: list[str]) -> dict[str, dict]:
    """Fingerprint and write ``DIR/checkpoints/<name>.json`` (the record ``atelier score`` reads)."""
    from evaluator.generation.checkpoints import load_checkpoints
    from evaluator.generation.runner import GenerateConfig, check_and_record_checkpoints

    specs = load_checkpoints(checkpoints_file)
    return check_and_record_checkpoints(names, specs, wd, GenerateConfig(progress=False))


# ------------------------------------------------------------------ 3. validation images


def validation_units(saved: SavedStep, checkpoint: str) -> list[WorkUnit]:
    """``validation_prompts`` x ``validation_seeds`` as units of ``checkpoint`` (square, the
    training resolution; the concept a prompt names, else the dataset's largest, as artist)."""
    from catalog.units import WorkUnit

    config = saved.config
    prompts = list(getattr(config, "validation_prompts", []) or [])
    seeds = list(getattr(config, "validation_seeds", []) or [])
    size = int(getattr(config, "resolution", 512))
    steps = int(getattr(config, "validation_inference_steps", DEFAULT_INFERENCE_STEPS))
    guidance = float(getattr(config, "validation_guidance", DEFAULT_GUIDANCE))
    return [
        WorkUnit(checkpoint, _concept_of(prompt, saved), VALIDATION_TEMPLATE, prompt, "", int(seed), size, size,
                 steps, guidance, "default")
        for prompt in prompts for seed in seeds
    ]


def _concept_of(prompt: str, saved: SavedStep) -> str:
    items = list(saved.split.train) + list(saved.split.validation)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.concept] = counts.get(item.concept, 0) + 1
    named = [c for c in counts if c.lower() in prompt.lower()]
    concept = max(named or counts, key=lambda c: (len(c) if named else counts[c], c))
    return next(i.concept_id for i in items if i.concept == concept)


def generate_validation(saved: SavedStep, checkpoints_file: Path, report: StepReport) -> tuple[list, list]:
    """Make the step's and the base's validation images; return (step images, base images) as
    ``GeneratedImage`` lists of the images that exist (failures go to ``report``)."""
    from evaluator.generation.runner import GenerateConfig, generate
    from evaluator.training.validation import GeneratedImage

    step_units = validation_units(saved, saved.checkpoint)
    base_units = validation_units(saved, saved.base.name)
    config = GenerateConfig(
        batch_size=max(1, len(getattr(saved.config, "validation_seeds", []) or [1])),
        device=getattr(saved.config, "device", "cpu"), progress=False,
        run_id=f"{saved.run_id}-val-{saved.step:06d}",
    )
    summary = generate(step_units + base_units, checkpoints_file, saved.workdir, config, rank=0, world_size=1)
    for unit_id, error in summary.errors.items():
        report.errors.append(f"validation image {unit_id} failed: {error}")
    root = Path(saved.workdir)

    def made(units: list[WorkUnit]) -> list[GeneratedImage]:
        return [GeneratedImage(u.image_id, root / "images" / u.relpath(), u.prompt, u.artist_id)
                for u in units if (root / "images" / u.relpath()).is_file()]

    step_images = made(step_units)
    report.images = len(step_images)
    report.failed_images = len(step_units) - len(step_images)
    return step_images, made(base_units)


# ------------------------------------------------------------------ 4. figures


def _load_validation_clip(saved: SavedStep):
    """The CLIP model of the step figures (config, else ATELIER_CLIP_MODEL), or None."""
    from evaluator.embedding.clip import load_clip
    from evaluator.workspace import settings

    model = getattr(saved.config, "validation_clip_model", None) or settings.clip_model()
    pretrained = getattr(saved.config, "validation_clip_pretrained", None) or settings.clip_pretrained()
    if not model:
        return None
    return load_clip(model, pretrained, device=getattr(saved.config, "device", "cpu"))


def compute_figures(saved: SavedStep, images: list, base_images: list, report: StepReport) -> StepFigures:
    from evaluator.embedding.text import text_cache_dir
    from evaluator.training.validation import EmbeddingCache, StepFigures, step_figures
    from evaluator.workspace.workdir import Workdir, model_slug

    clip = _load_validation_clip(saved)
    if clip is None:
        figures = StepFigures()
        figures.add("", "reference_similarity", None, 0,
                    "no CLIP model: set validation_clip_model in the config or ATELIER_CLIP_MODEL")
        report.errors.append("no CLIP model for the validation figures (validation_clip_model / ATELIER_CLIP_MODEL)")
        return figures
    wd = Workdir.at(saved.workdir)
    cache = EmbeddingCache(wd.root / "training" / saved.output_name / f"clip-{model_slug(clip.key)}.npz", clip)
    figures = step_figures(clip, cache, images, base_images, saved.split, text_cache_dir(wd, clip.key))
    report.figures = {m["metric"]: m["value"] for m in figures.metrics}
    return figures


def record_base_step(saved: SavedStep, base_images: list) -> bool:
    """The base's own figures and images as step 0 of the run (once per run), so the curves
    start where training did. Step 0 is shown, never chosen (``choose_step``). Retrieval is
    not computed for it: the base's images are its distractors. True when written now."""
    import dataclasses

    from evaluator.workspace.store import connect

    con = connect(Path(saved.workdir) / "atelier.duckdb", read_only=True)
    try:
        done = con.execute("SELECT 1 FROM training_steps WHERE run = ? AND step = 0", [saved.run_id]).fetchone()
    finally:
        con.close()
    if done or not base_images:
        return False
    base = dataclasses.replace(saved, step=0, train_loss=None, val_loss=None, lr=None, seconds=None,
                               step_dir=Path(saved.step_dir).parent, checkpoint_name=saved.base.name)
    report = StepReport(base.checkpoint)
    report.images = len(base_images)
    figures = compute_figures(base, base_images, [], report)
    for row in figures.metrics:
        if row["metric"].startswith("retrieval_map"):
            row["reason"] = "not computed for the base: its own images are the distractors"
    write_step_rows(base, report, base_images, figures)
    return True


# ------------------------------------------------------------------ 5. the rows


def write_step_rows(saved: SavedStep, report: StepReport, images: list, figures: StepFigures | None) -> None:
    """``training_steps``, ``training_images``, ``training_metrics``, ``training_memorization``
    of the step, replacing what an earlier call for the same step wrote, in one transaction."""
    import pandas as pd

    from evaluator.workspace.store import open_store, transaction, upsert_df

    root = Path(saved.workdir)
    key = {"run": saved.run_id, "step": int(saved.step)}
    step_row = pd.DataFrame([{
        **key, "train_loss": saved.train_loss, "val_loss": saved.val_loss, "lr": saved.lr,
        "seconds": saved.seconds, "checkpoint": saved.checkpoint, "step_dir": _relative(saved.step_dir, root),
        "validation_status": report.validation_status, "validation_error": "; ".join(report.errors) or None,
    }])
    image_rows = pd.DataFrame([{
        **key, "image_id": g.image_id, "checkpoint": saved.checkpoint, "prompt": g.prompt,
        "seed": _seed_of(g.path), "path": _relative(g.path, root),
        "thumb_path": _relative(root / "thumbs" / g.path.relative_to(root / "images").with_suffix(".jpg"), root),
        "error": None,
    } for g in images])
    metric_rows = pd.DataFrame([{**key, **m} for m in (figures.metrics if figures else [])])
    memo_rows = pd.DataFrame([{**key, **m} for m in (figures.memorization if figures else [])])
    with open_store(root / "atelier.duckdb") as con, transaction(con):
        for table in ("training_images", "training_metrics", "training_memorization"):
            con.execute(f"DELETE FROM {table} WHERE run = ? AND step = ?", [saved.run_id, int(saved.step)])
        upsert_df(con, "training_steps", step_row, key=["run", "step"])
        upsert_df(con, "training_images", image_rows, key=["run", "step", "image_id"])
        upsert_df(con, "training_metrics", metric_rows, key=["run", "step", "model", "metric"])
        upsert_df(con, "training_memorization", memo_rows, key=["run", "step", "model", "image_id"])


def _relative(path: Path, root: Path) -> str:
    path = Path(path)
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _seed_of(path: Path) -> int | None:
    """The seed of a runner image path (``<template>-<seed>-<unit8>.png``)."""
    parts = Path(path).stem.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


# ------------------------------------------------------------------ the entry point


def on_saved_step(saved: SavedStep) -> StepReport:
    """Steps 1-5 of the module docstring. A failure in 1-4 is reported (the step's row says
    what failed) and training goes on; only a store that cannot take the step's row raises."""
    report = StepReport(saved.checkpoint)
    saved.workdir = Path(saved.workdir).resolve()
    from evaluator.workspace.workdir import Workdir

    images: list[GeneratedImage] = []
    figures = None
    t0 = time.perf_counter()
    try:
        record_run(saved)
        if _references_missing(saved):  # the first step of a run, or one whose import failed
            register_references(saved)
        checkpoints_file = register_step(saved)
        record_step_checkpoint(Workdir.at(saved.workdir), checkpoints_file, [saved.base.name, saved.checkpoint])
        if not getattr(saved.config, "validation_prompts", None):
            report.errors.append("validation_prompts is empty: no validation image, no style figures")
        else:
            images, base_images = generate_validation(saved, checkpoints_file, report)
            figures = compute_figures(saved, images, base_images, report)
            record_base_step(saved, base_images)
    except Exception as exc:  # recorded with the step, never a crash of training
        where = traceback.extract_tb(exc.__traceback__)[-1]
        report.errors.append(f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
    report.figures.setdefault("validation_seconds", time.perf_counter() - t0)
    write_step_rows(saved, report, images, figures)
    return report
