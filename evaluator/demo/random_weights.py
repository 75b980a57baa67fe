"""The demo: the whole pipeline on tiny random-weight models, on a CPU, in minutes.

It builds a base checkpoint and two fine-tunes of it locally (a LoRA, and a copy with
perturbed weights), a tiny open_clip model, selects artists stratified over movements,
and runs plan -> generate -> embed -> index -> score -> comparisons into one workdir.

Random weights make every score meaningless: the demo proves the machinery (files,
tables, resumability, the dashboard), not a model. On a real machine the same stages
take hub ids or checkpoint files (see the README).

Reads the catalog shipped with atelier; writes ``models/``, ``checkpoints.toml``,
``plan.parquet``, the images, embeddings, index and store of the workdir.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluator.workspace.workdir import Workdir


@dataclass
class DemoConfig:
    # ~24 artists stratified over movements: enough for per-artist tables, neighbours
    # and a gained/lost split to be non-trivial, small enough for 2 CPU cores.
    n_artists: int = 24
    # Three seeds: the bootstrap over seeds needs more than one to give an interval.
    seeds: tuple[int, ...] = (0, 1, 2)
    # Two subject templates (so content_leak has something to compare) plus the
    # no-artist baseline that the `recognized` verdict needs.
    templates: tuple[str, ...] = ("style", "portrait", "null")
    # 64 px and 4 steps: the tiny UNet is random anyway; more would only cost time.
    width: int = 64
    height: int = 64
    steps: int = 4
    guidance: float = 5.0
    batch_size: int = 8
    # Bootstrap resamples: 200 keeps scoring fast; real runs use the default 1000.
    bootstrap: int = 200
    sample_seed: int = 0
    # One intra-op thread: the tiny models are far too small to split across cores, and
    # two OpenMP threads on a busy 2-core machine spin against each other (measured:
    # a tiny-UNet forward took 2.0 s with 2 threads under load, 0.04 s with 1).
    torch_threads: int = 1
    catalog_path: Path | None = None  # None: the styles.csv shipped with atelier


@dataclass
class DemoResult:
    """What a demo run made, and how long each stage took."""

    workdir: Path
    store: Path
    n_units: int
    generated: int
    skipped: int
    failed: int
    seconds: dict[str, float] = field(default_factory=dict)


def build_demo_models(models_dir: Path) -> dict[str, Path]:
    """Build (once) the tiny base, its two fine-tunes and the tiny CLIP model."""
    from evaluator.testing.tiny import build_finetune, build_tiny_lora, build_tiny_pipeline
    from evaluator.testing.tiny_clip import build_tiny_clip

    models_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "base": models_dir / "base",
        "lora": models_dir / "lora.safetensors",
        "finetune": models_dir / "finetune",
        "clip": models_dir / "clip",
    }
    # Each builder writes into a temporary folder and renames, so a folder that exists
    # is complete; a second demo run reuses them and its fingerprints stay the same.
    if not paths["base"].exists():
        build_tiny_pipeline(paths["base"], kind="sd1", seed=0)
    if not paths["lora"].exists():
        build_tiny_lora(paths["base"], paths["lora"], seed=1)
    if not paths["finetune"].exists():
        build_finetune(paths["base"], paths["finetune"], seed=2)
    if not paths["clip"].exists():
        build_tiny_clip(paths["clip"], seed=0)
    return paths


def _write_checkpoints_file(wd: Workdir, paths: dict[str, Path]) -> Path:
    """``checkpoints.toml`` naming the demo models."""
    from evaluator.demo.checkpoints import DemoCheckpoint, write_checkpoints_file

    return write_checkpoints_file(wd.root, "Tiny random-weight checkpoints built by `atelier demo` (scores are meaningless).", [
        DemoCheckpoint("base", paths["base"], "tiny random-weight SD 1.x pipeline (demo)"),
        DemoCheckpoint("ft-lora", paths["base"], "the base plus a random LoRA (demo)", base="base", lora=paths["lora"]),
        DemoCheckpoint("ft-weights", paths["finetune"], "the base with perturbed UNet weights (demo)", base="base"),
    ])


def _plan_demo(wd: Workdir, config: DemoConfig, echo) -> list:
    """Select the artists, write ``plan.parquet`` and say what it holds; returns the units."""
    from catalog.model import load_catalog
    from catalog.plan import make_plan, write_plan
    from catalog.select import select_artists
    from catalog.templates import load_templates

    # Artists with a movement: the strata of the sample, and names a newcomer may know (most
    # Danbooru handles have none). The demo's templates are artist templates, not characters'.
    with_movement = [a for a in load_catalog(config.catalog_path) if a.movements]
    artists = select_artists(
        with_movement,
        kind="artist",
        sample=config.n_artists,
        seed=config.sample_seed,
    )
    templates = load_templates()
    units = make_plan(
        artists,
        templates,
        list(config.templates),
        seeds=list(config.seeds),
        checkpoints=["base", "ft-lora", "ft-weights"],
        width=config.width,
        height=config.height,
        steps=config.steps,
        guidance=config.guidance,
    )
    write_plan(units, wd.root / "plan.parquet")
    subject = [name for name in config.templates if not templates[name].is_baseline]
    echo(f"plan: {len(units)} units = {len(artists)} artists x {len(subject)} templates "
         f"({', '.join(subject)}) x {len(config.seeds)} seeds x 3 checkpoints, plus the no-artist "
         f"baseline per seed and checkpoint -> {wd.root / 'plan.parquet'}")
    return units


def run_random_demo(workdir: str | Path, config: DemoConfig | None = None, echo=print) -> DemoResult:
    """Run every stage into ``workdir``; a second run makes no image and adds no row."""
    import torch

    from evaluator.generation.runner import GenerateConfig, generate
    from evaluator.scoring.run import ScoreConfig, score

    config = config or DemoConfig()
    wd = Workdir.at(workdir)
    torch.set_num_threads(config.torch_threads)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    paths = build_demo_models(wd.root / "models")
    timings["build_models"] = time.perf_counter() - t0
    checkpoints_file = _write_checkpoints_file(wd, paths)

    t0 = time.perf_counter()
    units = _plan_demo(wd, config, echo)
    timings["plan"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    summary = generate(units, checkpoints_file, wd.root, GenerateConfig(batch_size=config.batch_size))
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored = score(wd.root, ScoreConfig(model=str(paths["clip"]), catalog_path=config.catalog_path,
                                        bootstrap=config.bootstrap))
    timings["score"] = time.perf_counter() - t0
    for line in scored.warnings:  # NULL AUCs, undecided verdicts: said, never hidden
        echo(line)

    return DemoResult(
        workdir=wd.root,
        store=wd.store,
        n_units=len(units),
        generated=summary.done,
        skipped=summary.skipped,
        failed=summary.failed,
        seconds=timings,
    )
