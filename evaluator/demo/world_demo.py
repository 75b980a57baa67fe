"""The demo on a world whose truth is known: procedural artists, a model that paints them.

The base is the committed world model (``evaluator.world``: a tiny SD 1.x pipeline trained
from scratch on twelve procedural artists). Two fine-tunes are trained here, in the demo,
with the product's own trainer, each with a planted answer:

* ``ft-learns``: a LoRA on paintings of the newcomer, an artist the base never saw
  (planted: gained for the newcomer, kept for everyone else);
* ``ft-forgets``: a LoRA on one known artist's prompts captioning another artist's
  paintings (planted: lost for that artist, kept for everyone else).

References for every world artist are fresh paintings (seeds no model was trained on),
imported as reference works. Then plan -> generate -> embed -> score as on real models,
with a random-weight CLIP tower for the embeddings (structure is enough to tell the
procedural styles apart; text-side metrics are structural only), and the store's
verdicts are checked against the planted truth (``evaluator.demo.truth``).

Eight numbered steps (``run_world_demo``). Reads the world package; writes into the
workdir: ``models/`` (CLIP, the two LoRA files), ``world/training/`` (the trainer's scratch
workdir with the LoRA datasets), ``checkpoints.toml``, ``plan.parquet``, the images, embeddings,
store and ``demo-truth.csv``. A second run trains nothing, makes no image, adds no row.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluator.demo.truth import Planted
from evaluator.workspace.workdir import Workdir

if TYPE_CHECKING:
    from evaluator.world.lora import LoraRecipe

BASE = "base"
LEARNS = "ft-learns"
FORGETS = "ft-forgets"


@dataclass
class WorldDemoConfig:
    """The world demo. Comments give the reason for each default."""

    # Six seeds per (artist, checkpoint): the paired bootstrap over seeds needs several to
    # give an interval that a planted change clears and noise does not.
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    # The prompt the world model and the LoRAs were captioned with, and the no-artist baseline.
    templates: tuple[str, ...] = ("style", "null")
    resolution: int = 32  # the world model's size: its paintings are 32 px
    steps: int = 12  # sampler steps: evaluator.world.measure.SAMPLER_STEPS, where its images stop changing
    # evaluator.world.measure.GUIDANCE (the model was trained with caption dropout): its
    # styles are most distinct there; guidance 2 matched more planted cells (98 of 102 vs
    # 95) by damping what the LoRAs change, bleed included, but blurs the base's styles
    guidance: float = 4.0
    batch_size: int = 16
    references_per_artist: int = 12  # fresh paintings per artist: a stable prototype and retrieval set
    # --- the two LoRAs: evaluator.world.lora.LORA_RECIPE (measured: see its module)
    forgotten: str = "saffi-kettering"  # the known artist ft-forgets loses (orange sunbursts: the best learned) ...
    painted_instead: str = "ilse-marrow"  # ... painted as this one (blue waves): nothing alike
    lora_recipe: LoraRecipe | None = None  # None: evaluator.world.lora.LORA_RECIPE (measured)
    bootstrap: int = 1000  # bootstrap resamples: the world's store is small, so the default is cheap
    clip_seed: int = 0
    torch_threads: int = 1  # the tiny models are too small to split across cores (see DemoConfig)


@dataclass
class WorldDemoResult:
    """What a world demo run made, how long each stage took, and the truth it recovered."""

    workdir: Path
    store: Path
    n_units: int
    generated: int
    skipped: int
    failed: int
    truth: list = field(default_factory=list)  # evaluator.demo.truth.TruthCell
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def plants_of(config: WorldDemoConfig) -> list[Planted]:
    """The planted answers: what each fine-tune is made to gain and lose."""
    from evaluator.world.painter import artist_ids

    return [Planted(LEARNS, gained=tuple(artist_ids("newcomer"))), Planted(FORGETS, lost=(config.forgotten,))]


def _paint(folder: Path, items: list[tuple[str, int, str]], size: int) -> None:
    """Paint (artist, seed, file stem) into ``folder`` as PNG files."""
    from evaluator.world.painter import paint

    folder.mkdir(parents=True)
    for artist_id, seed, stem in items:
        paint(artist_id, seed, size).save(folder / f"{stem}.png")


def _import_references(wd: Workdir, config: WorldDemoConfig, catalog: Path) -> int:
    """Step 2: fresh paintings of every world artist (seeds no model was trained on),
    imported as its reference works. The importer reads a folder outside the workdir, so
    they are painted into a temporary one; the same pixels on a rerun import nothing new."""
    import tempfile

    from evaluator.ingest.importer import import_images
    from evaluator.world.painter import artist_ids, fresh_seeds

    items = [(a, s, f"{a}-{s}") for a in artist_ids() for s in fresh_seeds(config.references_per_artist)]
    with tempfile.TemporaryDirectory(prefix="atelier-world-refs-") as tmp:
        folder = Path(tmp) / "references"
        _paint(folder, items, config.resolution)
        labels = Path(tmp) / "labels.csv"
        labels.write_text("file,artist\n" + "".join(f"{stem}.png,{a}\n" for a, _, stem in items), encoding="utf-8")
        summary = import_images(folder, wd.root, labels_csv=labels, as_reference=True, catalog_path=catalog,
                                progress=False)
    return summary.imported


def _train_lora(wd: Workdir, config: WorldDemoConfig, name: str, base: Path, echo) -> Path:
    """Step 3: one LoRA by ``atelier train``'s library (``evaluator.world.lora``), in a scratch
    workdir (its held-out images must not become the demo's references), copied whole to
    ``models/<name>.safetensors``; a LoRA file that exists is not trained again."""
    from catalog.atomic import atomic_path
    from evaluator.world.lora import LORA_RECIPE, train_world_lora
    from evaluator.world.painter import artist_ids

    out = wd.root / "models" / f"{name}.safetensors"
    if out.exists():
        return out
    painted, caption = ((artist_ids("newcomer")[0],) * 2 if name == LEARNS
                        else (config.painted_instead, config.forgotten))
    recipe = config.lora_recipe or LORA_RECIPE
    prior = f", beside {recipe.prior_images} of each other known artist" if recipe.prior_images else ""
    echo(f"train {name}: a LoRA (rank {recipe.rank}, {recipe.steps} steps) on {recipe.images} "
         f"paintings of {painted} captioned as {caption}{prior}")
    weights = train_world_lora(base, wd.root / "world" / "training", painted, caption, name, recipe=recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        shutil.copyfile(weights, tmp)
    return out


def _write_checkpoints(wd: Workdir, base: Path, loras: dict[str, Path]) -> Path:
    """Step 4: ``checkpoints.toml``: the committed world model and the two LoRAs trained here."""
    from evaluator.demo.checkpoints import DemoCheckpoint, write_checkpoints_file

    comment = "The world demo's checkpoints: the committed world model and two LoRAs trained by the demo."
    return write_checkpoints_file(wd.root, comment, [
        DemoCheckpoint(BASE, base, "the world model: a tiny SD 1.x pipeline trained from scratch on twelve "
                                   "procedural artists"),
        DemoCheckpoint(LEARNS, base, "LoRA on the newcomer's paintings (planted: gained for it, kept for the others)",
                       base=BASE, lora=loras[LEARNS]),
        DemoCheckpoint(FORGETS, base, "LoRA painting another artist's works for one known artist's name "
                                      "(planted: lost for it)", base=BASE, lora=loras[FORGETS]),
    ])


def _plan(wd: Workdir, config: WorldDemoConfig, catalog: Path, echo) -> list:
    """Step 5: every world artist x the style template x the seeds x three checkpoints, plus the baseline."""
    from catalog.model import load_catalog
    from catalog.plan import make_plan, write_plan
    from catalog.templates import load_templates

    artists = load_catalog(catalog)
    units = make_plan(artists, load_templates(), list(config.templates), seeds=list(config.seeds),
                      checkpoints=[BASE, LEARNS, FORGETS], width=config.resolution, height=config.resolution,
                      steps=config.steps, guidance=config.guidance)
    write_plan(units, wd.root / "plan.parquet")
    echo(f"plan: {len(units)} units = {len(artists)} world artists x {len(config.seeds)} seeds x 3 checkpoints, "
         f"plus the no-artist baseline -> {wd.root / 'plan.parquet'}")
    return units


def _timed(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def run_world_demo(workdir: str | Path, config: WorldDemoConfig | None = None, echo=print) -> WorldDemoResult:
    """Run the eight steps into ``workdir``; a second run trains nothing and adds no row."""
    import torch

    from evaluator.demo.truth import measure_truth, write_truth_csv
    from evaluator.generation.runner import GenerateConfig, generate
    from evaluator.scoring.run import ScoreConfig, score
    from evaluator.world.build import world_model_path
    from evaluator.world.catalog import world_catalog_path
    from evaluator.world.measure import measure_clip
    from evaluator.world.painter import artist_ids

    config = config or WorldDemoConfig()
    wd = Workdir.at(workdir)
    torch.set_num_threads(config.torch_threads)
    catalog, base, timings = world_catalog_path(), world_model_path(), {}
    # 1. the models: the committed world model, a random CLIP tower
    t0 = time.perf_counter()
    clip = wd.root / "models" / "clip"
    if not clip.exists():
        measure_clip(clip, seed=config.clip_seed)  # the random tower the world's retrieval was measured with
    # 2. references: fresh paintings of every world artist
    _import_references(wd, config, catalog)
    _timed(timings, "references", t0)
    # 3. the two LoRAs, each with its planted answer
    t0 = time.perf_counter()
    loras = {name: _train_lora(wd, config, name, base, echo) for name in (LEARNS, FORGETS)}
    _timed(timings, "train", t0)
    # 4. checkpoints.toml; 5. the plan
    checkpoints = _write_checkpoints(wd, base, loras)
    units = _plan(wd, config, catalog, echo)
    # 6. generate
    t0 = time.perf_counter()
    summary = generate(units, checkpoints, wd.root, GenerateConfig(batch_size=config.batch_size))
    _timed(timings, "generate", t0)
    # 7. embed, index and score against the world catalog
    t0 = time.perf_counter()
    scored = score(wd.root, ScoreConfig(model=str(clip), catalog_path=catalog, bootstrap=config.bootstrap))
    _timed(timings, "score", t0)
    # 8. the planted truth against the store's own verdicts
    truth = measure_truth(wd.store, BASE, plants_of(config), artist_ids())
    write_truth_csv(truth, wd.root / "demo-truth.csv")
    return WorldDemoResult(wd.root, wd.store, len(units), summary.done, summary.skipped, summary.failed,
                           truth=truth, seconds=timings, warnings=list(scored.warnings))
