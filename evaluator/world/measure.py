"""What the world model has learned, measured: retrieval of its images, a contact sheet, speed.

* ``retrieval``: embed fresh paintings (seeds >= painter.FRESH_SEED_START, never trained
  on) and the model's generations with a random-weight open_clip tower; each generated
  image is given the artist whose fresh-painting centroid is nearest (cosine). Top-1
  accuracy per artist and over all, next to the same figure for fresh paintings
  themselves (held-out seeds against the centroids): how well the encoder can tell the
  artists apart at all.
* ``contact_sheet``: per artist, paintings beside the model's images for the same prompt.
* ``generation_speed``: images per second at a batch size, on this process's threads.

Reads a world model folder and a CLIP folder; ``contact_sheet`` writes one PNG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STYLE_PROMPT = "a painting in the style of {name}"
# Sampler settings of every measurement: few steps (the demo makes ~600 images), mild guidance.
SAMPLER_STEPS = 12
GUIDANCE = 4.0


@dataclass
class SamplerSettings:
    steps: int = SAMPLER_STEPS
    guidance: float = GUIDANCE
    batch_size: int = 16


def load_world_pipeline(model_dir: str | Path, lora: str | Path | None = None):
    """The world model as a diffusers pipeline on the CPU (fp32), a LoRA loaded when given."""
    from diffusers import StableDiffusionPipeline

    from evaluator.generation.checkpoints import quiet_hf_libraries

    quiet_hf_libraries()
    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    return pipe


def generate(pipe, prompts: list[str], seeds: list[int], settings: SamplerSettings | None = None) -> list:
    """One image per (prompt, seed) pair, in batches; each image from its own seeded generator."""
    import torch

    settings = settings or SamplerSettings()
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    images = []
    for start in range(0, len(prompts), settings.batch_size):
        chunk = slice(start, start + settings.batch_size)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[chunk]]
        out = pipe(prompts[chunk], num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                   generator=generators, height=side, width=side)
        images.extend(out.images)
    return images


def artist_prompts(artist_ids: list[str], per_artist: int) -> tuple[list[str], list[str]]:
    """(prompts, labels): ``per_artist`` style prompts for each artist, in artist order."""
    from evaluator.world.painter import world_artist

    prompts, labels = [], []
    for artist_id in artist_ids:
        prompts += [STYLE_PROMPT.format(name=world_artist(artist_id).name)] * per_artist
        labels += [artist_id] * per_artist
    return prompts, labels


def embed_images(clip, images: list) -> np.ndarray:
    """L2-normalised image embeddings of PIL images with a loaded open_clip model (evaluator.embedding)."""
    import torch

    with torch.no_grad():
        batch = torch.stack([clip.preprocess(im.convert("RGB")) for im in images])
        vectors = clip.model.encode_image(batch).float()
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()


@dataclass
class Retrieval:
    """Nearest-centroid top-1 accuracy of generated images (and of fresh paintings) per artist."""

    artists: list[str]
    generated: dict[str, float] = field(default_factory=dict)
    paintings: dict[str, float] = field(default_factory=dict)

    @property
    def generated_top1(self) -> float:
        return float(np.mean(list(self.generated.values())))

    @property
    def paintings_top1(self) -> float:
        return float(np.mean(list(self.paintings.values())))


def nearest_centroid_accuracy(centroids: np.ndarray, vectors: np.ndarray, labels: list[int]) -> list[bool]:
    """Whether each vector's nearest centroid (cosine) is its label's."""
    normed = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    return [bool(i == j) for i, j in zip(np.argmax(vectors @ normed.T, axis=1), labels, strict=True)]


def retrieval(pipe, clip, artist_ids: list[str], per_artist: int = 8, settings: SamplerSettings | None = None,
              seed_offset: int = 0) -> Retrieval:
    """Top-1 of the model's images of ``artist_ids`` against centroids of fresh paintings (see module)."""
    from evaluator.world.painter import fresh_seeds, paint

    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    reference = {a: embed_images(clip, [paint(a, s, side) for s in fresh_seeds(per_artist, seed_offset)])
                 for a in artist_ids}
    held_out = {a: embed_images(clip, [paint(a, s, side) for s in fresh_seeds(per_artist, seed_offset + 500_000)])
                for a in artist_ids}
    centroids = np.stack([reference[a].mean(axis=0) for a in artist_ids])
    prompts, labels = artist_prompts(artist_ids, per_artist)
    images = generate(pipe, prompts, [seed_offset + i for i in range(len(prompts))], settings)
    generated = embed_images(clip, images)
    hits = nearest_centroid_accuracy(centroids, generated, [artist_ids.index(a) for a in labels])
    result = Retrieval(list(artist_ids))
    for index, artist_id in enumerate(artist_ids):
        result.generated[artist_id] = float(np.mean(hits[index * per_artist : (index + 1) * per_artist]))
        own = nearest_centroid_accuracy(centroids, held_out[artist_id], [index] * per_artist)
        result.paintings[artist_id] = float(np.mean(own))
    return result


def contact_sheet(pipe, artist_ids: list[str], out_png: str | Path, per_side: int = 4,
                  settings: SamplerSettings | None = None, cell: int = 64) -> Path:
    """A PNG: one row per artist, ``per_side`` fresh paintings | ``per_side`` generations."""
    from PIL import Image, ImageDraw

    from catalog.atomic import atomic_path
    from evaluator.world.painter import fresh_seeds, paint, world_artist

    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    prompts, _ = artist_prompts(artist_ids, per_side)
    generated = generate(pipe, prompts, list(range(len(prompts))), settings)
    label_width, gap = 150, 8
    sheet = Image.new("RGB", (label_width + 2 * per_side * cell + gap, 18 + len(artist_ids) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_width, 3), "fresh paintings", fill="black")
    draw.text((label_width + per_side * cell + gap, 3), "world model: \"a painting in the style of <name>\"", fill="black")
    for row, artist_id in enumerate(artist_ids):
        artist, top = world_artist(artist_id), 18 + row * cell
        draw.text((4, top + cell // 2 - 12), f"{artist.name}\n{artist.mark} ({artist.role})", fill="black")
        for col, seed in enumerate(fresh_seeds(per_side)):
            sheet.paste(paint(artist_id, seed, side).resize((cell, cell), Image.Resampling.NEAREST),
                        (label_width + col * cell, top))
        for col in range(per_side):
            image = generated[row * per_side + col].resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(image, (label_width + (per_side + col) * cell + gap, top))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def generation_speed(pipe, settings: SamplerSettings | None = None, batches: int = 2) -> float:
    """Images per second at ``settings.batch_size`` (after one warm-up batch)."""
    settings = settings or SamplerSettings()
    prompts = [STYLE_PROMPT.format(name="Orla Vennick")] * settings.batch_size
    generate(pipe, prompts, list(range(len(prompts))), settings)
    t0 = time.perf_counter()
    for _ in range(batches):
        generate(pipe, prompts, list(range(len(prompts))), settings)
    return batches * settings.batch_size / (time.perf_counter() - t0)


# Config of the random image tower the figures are measured with: wider than the tests' tiny
# one (16) and with 4 px patches at 32 px, so marks a few pixels wide reach the embedding.
MEASURE_CLIP = {"embed_dim": 64, "image_size": 32, "width": 64, "layers": 2, "patch_size": 4}


def measure_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the random-weight open_clip folder of the measurements (``MEASURE_CLIP``)."""
    from evaluator.testing.tiny_clip import build_random_clip, tiny_clip_config

    shape = dict(MEASURE_CLIP)
    patch = shape.pop("patch_size")
    config = tiny_clip_config(**shape)
    config["vision_cfg"]["patch_size"] = patch
    return build_random_clip(out_dir, model_cfg=config, seed=seed, kind="world-measure-clip")


def measure_world(model_dir: str | Path, clip_dir: str | Path | None = None, per_artist: int = 8,
                  settings: SamplerSettings | None = None, lora: str | Path | None = None,
                  artist_ids: list[str] | None = None) -> dict:
    """Retrieval top-1 of the model's images of ``artist_ids`` (default: the known artists),
    with the paintings' own top-1 beside it, and the generation speed; as a dict."""
    import tempfile

    from evaluator.embedding.clip import load_clip
    from evaluator.world.painter import artist_ids as ids_of

    settings = settings or SamplerSettings()
    pipe = load_world_pipeline(model_dir, lora)
    with tempfile.TemporaryDirectory(prefix="atelier-world-clip-") as tmp:
        clip = load_clip(str(clip_dir or measure_clip(Path(tmp) / "clip")))
        result = retrieval(pipe, clip, artist_ids or ids_of("known"), per_artist, settings)
    return {
        "generated_top1": round(result.generated_top1, 4), "paintings_top1": round(result.paintings_top1, 4),
        "per_artist": {a: round(v, 3) for a, v in result.generated.items()},
        "sampler": {"steps": settings.steps, "guidance": settings.guidance, "batch_size": settings.batch_size},
        "images_per_s": round(generation_speed(pipe, settings, batches=1), 2),
    }


def assignments(pipe, clip, prompt_artists: list[str], centroid_artists: list[str], per_artist: int = 8,
                settings: SamplerSettings | None = None) -> dict[str, dict[str, float]]:
    """For each artist prompted, the share of its images whose nearest fresh-painting centroid
    is each of ``centroid_artists``: how a LoRA moved a prompt (teach: the newcomer's
    prompt goes to the newcomer; swap: X's prompt goes to Y)."""
    from evaluator.world.painter import fresh_seeds, paint

    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    centroids = np.stack([embed_images(clip, [paint(a, s, side) for s in fresh_seeds(per_artist)]).mean(axis=0)
                          for a in centroid_artists])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    prompts, _ = artist_prompts(prompt_artists, per_artist)
    vectors = embed_images(clip, generate(pipe, prompts, list(range(len(prompts))), settings))
    nearest = np.argmax(vectors @ centroids.T, axis=1)
    shares = {}
    for index, artist_id in enumerate(prompt_artists):
        chosen = nearest[index * per_artist : (index + 1) * per_artist]
        shares[artist_id] = {a: round(float(np.mean(chosen == j)), 3) for j, a in enumerate(centroid_artists)
                             if np.any(chosen == j)}
    return shares
