"""Build the world model: a tiny SD 1.x pipeline that paints the twelve known world artists.

``build_world(out_dir, WorldConfig())`` remakes the committed model folder
(``world_model_path()``) in five numbered steps:

1. paint the training set (known artists only, seeds ``0 .. images_per_artist - 1``) into a
   kohya folder ``1_<artist_id>/`` with ``.txt`` captions from the catalog's templates;
2. build a random-initialised tiny SD 1.x pipeline (:mod:`evaluator.world.components`);
3. pre-train its VAE (a short loop of its own) on paintings of *every* world artist, seeds
   ``0 .. images_per_artist - 1``: the VAE is the world's image codec, as SD's VAE was
   trained on a general corpus; only the UNet and the text encoder learn the known names;
4. train the UNet and the text encoder (from random weights) with the product's own trainer, ``evaluator.training.loop.train`` with
   ``TrainingConfig(method="full")``, the path of ``atelier train --method full``;
5. write the pipeline folder and ``world.json``: config, seed, data fingerprint, loss logs,
   the sha256 of every weight file, timings.

Reads nothing but the painter; writes ``out_dir`` (whole, through a temporary sibling
folder) and uses a temporary workdir for the trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError
from evaluator.world.lora import (  # re-exported: the recipe measured on this model
    LORA_RECIPE,
    LoraRecipe,
    paint_concept,
)

__all__ = ["LORA_RECIPE", "LoraRecipe", "WorldConfig", "build_world", "world_model_path"]

WORLD_JSON = "world.json"
MODEL_DIR = "model"
# Captions: these templates of catalog/data/templates.toml, taken in turn by seed. Only
# "style" (what the demo and the measurements prompt with): with four templates, a
# 1,200-step model learned the sentences' textures but not the names.
CAPTION_TEMPLATES = ("style",)
OUTPUT_NAME = "world-base"


@dataclass
class WorldConfig:
    """How the world model is made. Comments give the reason for each default."""

    seed: int = 0  # fixes the paintings' order, the initial weights, the VAE's and the trainer's draws
    resolution: int = 32  # px: the smallest side at which stripes, dots and rings stay legible
    images_per_artist: int = 48  # training paintings per known artist (seeds 0..47): enough variety, ~600 in all
    caption_templates: tuple[str, ...] = CAPTION_TEMPLATES  # see CAPTION_TEMPLATES

    # --- the architecture (SD 1.x classes, few channels: a few MB of weights)
    vae_channels: tuple[int, ...] = (16, 32)  # two levels: latents at 1/2 the side (16x16 at 32 px); 1/4 lost the marks
    vae_attention: bool = False  # no attention in the VAE's middle: ~10% faster, and marks are local
    latent_channels: int = 4  # SD's: the UNet and every LoRA tool expect four
    unet_channels: tuple[int, ...] = (16, 32, 64)  # 16, 8, 4 latent px; narrow at 16 (no attention there): cheap
    unet_layers_per_block: int = 1  # one resnet per level: depth costs CPU time, width learns styles
    attention_head_dim: int = 8  # heads of 8 channels: cross attention reads the name with several heads
    text_hidden: int = 32  # text encoder width (= the UNet's cross-attention width)
    text_layers: int = 2  # two random layers already mix the name into every token
    tokenizer_merges: int = 1000  # a valid CLIP BPE with 1,514 tokens (see evaluator.testing.tiny)

    # --- 3. the VAE's own pre-training
    vae_steps: int = 400  # reconstruction error stops improving by much after a few hundred steps
    vae_batch_size: int = 16  # a batch covers most artists; smaller batches, more steps learn faster per CPU second
    vae_learning_rate: float = 3e-3  # from scratch: high, decayed by a cosine
    vae_kl_weight: float = 1e-6  # SD's VAE order of magnitude: keeps latents near-Gaussian, no blur
    # Paintings of every world artist, not only the known ones: SD's VAE reconstructs any
    # artist, and trained on the twelve known ones only, this one could not: the newcomer's
    # teal and coral came back olive (mean abs error 0.40 against 0.06-0.20 for the known),
    # so no LoRA could ever paint it, however trained.
    vae_every_artist: bool = True

    # --- 4. the UNet, trained by evaluator.training (method full)
    unet_steps: int = 3000  # optimizer steps at batch 16 (~83 epochs): 1,200 left the loss falling (0.187; 3,000: 0.137)
    unet_batch_size: int = 16  # per step: most artists in every batch; more steps beat bigger batches on a CPU
    unet_learning_rate: float = 1e-3  # from scratch (not fine-tuning): 1e-3 with warmup and cosine decay
    unet_warmup_steps: int = 100  # a short warmup keeps the first large updates from diverging
    unet_save_every: int | None = None  # None: save the last step only (earlier steps are not kept in the folder)
    train_text_encoder: bool = True  # frozen random names were not told apart after 600 steps; trained, they move apart
    caption_dropout_rate: float = 0.1  # ~10% unconditional steps, as SD: classifier-free guidance needs them
    threads: int = 1  # torch threads: on a shared 2-core CPU one thread per process is fastest

    def validate(self) -> WorldConfig:
        """Refuse a config that cannot build, naming the field; return self."""
        if self.resolution < 8 or self.resolution % 8:
            raise InputError(f"world config: field 'resolution' must be a multiple of 8 but is {self.resolution}")
        for name in ("images_per_artist", "vae_steps", "vae_batch_size", "unet_steps", "unet_batch_size", "threads",
                     "text_hidden", "text_layers", "latent_channels"):
            if getattr(self, name) < 1:
                raise InputError(f"world config: field {name!r} must be >= 1 but is {getattr(self, name)}")
        if (self.resolution // self.vae_factor) % 2 ** (len(self.unet_channels) - 1):
            raise InputError(f"world config: field 'unet_channels': {len(self.unet_channels)} levels cannot halve "
                             f"latents of side {self.resolution // self.vae_factor}")
        from catalog.templates import load_templates

        known = load_templates()
        for name in self.caption_templates:
            if name not in known:
                raise InputError(f"world config: field 'caption_templates': no template {name!r} "
                                 f"(templates: {', '.join(sorted(known))})")
        return self

    @property
    def vae_factor(self) -> int:
        """How much smaller the latents' side is than the image's."""
        return 2 ** (len(self.vae_channels) - 1)


# Fields that change what is kept or how fast it runs, never the weights (every draw of the
# trainer is seeded per step and image): two builds differing only in these are equal.
NON_WEIGHT_FIELDS = ("unet_save_every", "threads")


def world_model_path() -> Path:
    """The committed world model folder (a diffusers StableDiffusionPipeline + ``world.json``)."""
    return Path(__file__).resolve().parent / MODEL_DIR


def config_record(config: WorldConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


# ------------------------------------------------------------------ 1. the training set


def training_seeds(config: WorldConfig) -> range:
    """Seeds of the base model's training paintings (all below painter.FRESH_SEED_START)."""
    return range(config.images_per_artist)


def paint_training_set(folder: Path, config: WorldConfig, artists: list[str] | None = None,
                       seeds: range | list[int] | None = None) -> Path:
    """Paint ``artists`` (default: the known ones) into a kohya folder, one ``1_<artist_id>/``
    each, captions rendered from ``caption_templates`` (in turn, by seed)."""
    from catalog.templates import load_templates
    from evaluator.world.painter import artist_ids, world_artist

    templates = [load_templates()[name] for name in config.caption_templates]
    for artist_id in artists if artists is not None else artist_ids("known"):
        name = world_artist(artist_id).name
        paint_concept(folder / f"1_{artist_id}", artist_id, seeds if seeds is not None else training_seeds(config),
                      config.resolution, lambda seed, name=name: templates[seed % len(templates)].render(name))
    return folder


def _vae_artists(config: WorldConfig) -> list[str]:
    from evaluator.world.painter import artist_ids

    return artist_ids() if config.vae_every_artist else artist_ids("known")


def paint_vae_set(folder: Path, training_set: Path, config: WorldConfig) -> Path:
    """The VAE's paintings: the training set, or (``vae_every_artist``) every world artist
    at the same seeds (the newcomer's are disjoint from its LoRA's and from the references)."""
    if not config.vae_every_artist:
        return training_set
    return paint_training_set(folder, config, artists=_vae_artists(config))


def data_fingerprint(folder: Path) -> str:
    """sha256 over every training image's and caption's relative path and bytes, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def load_images(folder: Path):
    """Every PNG under ``folder`` as a float tensor [N, 3, H, W] in [-1, 1] (path order)."""
    import numpy as np
    import torch
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in sorted(folder.rglob("*.png"))]
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------ 2.-3. the random pipeline, its VAE


def build_base(folder: Path, data: Path, config: WorldConfig, progress: bool) -> dict:
    """Steps 2 and 3: the random pipeline with a pre-trained VAE, saved to ``folder``."""
    from diffusers import StableDiffusionPipeline

    from evaluator.generation.checkpoints import quiet_hf_libraries
    from evaluator.world.components import build_components, pretrain_vae, reconstruction_error

    components = build_components(config)
    images = load_images(data)
    t0 = time.perf_counter()
    losses = pretrain_vae(components["vae"], images, config, progress=progress)
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    quiet_hf_libraries()  # transformers' "Writing model shards" bar is not the build's progress
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return {"seconds": round(time.perf_counter() - t0, 2), "loss": _log(losses),
            "reconstruction_mae": round(reconstruction_error(components["vae"], images[:256]), 5),
            "scaling_factor": components["vae"].config.scaling_factor}


def _log(losses: list[float], points: int = 40) -> list[list[float]]:
    """[step, loss] at ``points`` evenly spaced steps (the mean of the steps since the last point)."""
    if not losses:
        return []
    every = max(1, len(losses) // points)
    return [[i + every, round(sum(losses[i : i + every]) / len(losses[i : i + every]), 5)]
            for i in range(0, len(losses), every)]


# ------------------------------------------------------------------ 4. the UNet, by the product's trainer


def unet_training_config(config: WorldConfig, base: Path, data: Path):
    """The TrainingConfig of step 4: what ``atelier train --method full`` would be given."""
    from evaluator.training.config import TrainingConfig

    side = config.resolution
    return TrainingConfig(
        method="full", base=str(base), dataset=str(data), output_name=OUTPUT_NAME,
        resolution=side, min_bucket_reso=side, max_bucket_reso=side, bucket_reso_steps=side,
        train_batch_size=config.unet_batch_size, max_train_steps=config.unet_steps,
        learning_rate=config.unet_learning_rate, lr_scheduler="cosine", lr_warmup_steps=config.unet_warmup_steps,
        adam_weight_decay=0.0, seed=config.seed, save_every=config.unet_save_every or config.unet_steps, validation_fraction=0.02,
        caption_dropout_rate=config.caption_dropout_rate, train_text_encoder=config.train_text_encoder,
    ).validate("world config")


def train_unet(base: Path, data: Path, workdir: Path, config: WorldConfig, progress: bool) -> tuple[Path, dict]:
    """Step 4: train; return the trained pipeline folder and the run's figures."""
    from evaluator.training.loop import train

    result = train(unet_training_config(config, base, data), workdir, progress=progress)
    saved = result.saved[-1]
    figures = {"seconds": round(result.seconds, 2), "steps_per_s": round(result.steps_per_s, 3),
               "loss": _log(result.losses), "final_train_loss": round(saved.train_loss, 5),
               "validation_loss": None if saved.val_loss is None else round(saved.val_loss, 5)}
    return saved.step_dir / OUTPUT_NAME, figures


# ------------------------------------------------------------------ 5. the folder and world.json


def weight_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file of the pipeline folder but ``world.json`` (relative POSIX path -> hex)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != WORLD_JSON}


def build_world(out_dir: str | Path, config: WorldConfig | None = None, progress: bool = True) -> Path:
    """Remake the world model into ``out_dir`` (see the module docstring); return ``out_dir``."""
    import tempfile

    import torch

    config = (config or WorldConfig()).validate()
    out = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="atelier-world-") as tmp:
            data = paint_training_set(Path(tmp) / "data", config)  # 1.
            vae_data = paint_vae_set(Path(tmp) / "vae-data", data, config)
            vae = build_base(Path(tmp) / "base", vae_data, config, progress)  # 2. + 3.
            trained, unet = train_unet(Path(tmp) / "base", data, Path(tmp) / "workdir", config, progress)  # 4.
            record = {  # 5.
                "kind": "atelier world model", "pipeline": "StableDiffusionPipeline (SD 1.x classes)",
                "config": config_record(config), "seed": config.seed,
                "known_artists": _known(), "training_seeds": [0, config.images_per_artist - 1],
                "data_fingerprint": data_fingerprint(data), "n_training_images": len(list(data.rglob("*.png"))),
                "vae": vae | {"trained_by": "evaluator.world.components.pretrain_vae (its own loop)",
                              "artists": _vae_artists(config), "data_fingerprint": data_fingerprint(vae_data),
                              "n_images": len(list(vae_data.rglob("*.png")))},
                "text_encoder": "random initialisation, trained with the UNet (train_text_encoder)"
                if config.train_text_encoder else "random initialisation, frozen",
                "unet": unet | {"trained_by": "evaluator.training.loop.train (method full)"},
                "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 2),
            }
            _write_folder(trained, out, record)
    finally:
        torch.set_num_threads(threads)
    return out


def _known() -> list[str]:
    from evaluator.world.painter import artist_ids

    return artist_ids("known")


def _write_folder(trained: Path, out: Path, record: dict) -> None:
    """Copy the trained pipeline to ``out`` whole (temporary sibling, then rename) with ``world.json``."""
    staging = out.with_name(f".{out.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(trained, staging)
    record["files"] = weight_hashes(staging)
    (staging / WORLD_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def read_world_json(folder: str | Path | None = None) -> dict:
    """The ``world.json`` of a world model folder (default: the committed one)."""
    path = Path(folder or world_model_path()) / WORLD_JSON
    if not path.is_file():
        raise InputError(f"{path} does not exist: not a world model folder (make one with `atelier world build`)")
    return json.loads(path.read_text(encoding="utf-8"))
