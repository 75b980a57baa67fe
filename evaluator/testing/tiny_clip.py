"""Random-weight open_clip models built locally, for tests, the demo and benchmarks.

These machines reach no model hub, so the real loading path (``open_clip`` reading a
``local-dir:`` folder with ``open_clip_config.json`` + weights) is exercised on models we
build here, the way open_clip tests itself. The tokenizer is open_clip's SimpleTokenizer,
whose BPE vocabulary ships in the wheel, so text encoding works offline too.

A tiny model (width 16, 2 layers, 32 px) embeds hundreds of images per second on one
CPU core; a ``ViT-B-32``-sized one (``build_random_clip(..., base="ViT-B-32")``) has
realistic compute for benchmarks.

Reads nothing; writes a folder with ``open_clip_config.json`` and safetensors weights.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

# CLIP's normalisation constants: the same preprocessing as the real models, so the
# tiny model runs the very same transform code.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_clip_config(
    embed_dim: int = 16, image_size: int = 32, width: int = 16, layers: int = 2
) -> dict:
    """An open_clip model config of a few hundred thousand parameters.

    The text vocabulary stays at 49,408 (the real BPE) so real prompts tokenize to the
    same ids a full model would see; that table dominates the size (~0.8M floats).
    """
    if image_size % 8 != 0:
        raise ValueError(f"image_size must be divisible by 8 but is {image_size}")
    if width % 8 != 0:
        raise ValueError(f"width must be divisible by 8 but is {width}")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "head_width": 8,  # open_clip's default 64 would give zero heads at width 16
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": width,
            "heads": max(1, width // 8),
            "layers": layers,
        },
    }


def build_random_clip(
    out_dir: str | Path,
    model_cfg: dict | None = None,
    base: str | None = None,
    seed: int = 0,
    kind: str = "tiny-clip",
) -> Path:
    """Save a random-weight open_clip model as a ``local-dir:`` folder; return the folder.

    ``base`` takes the architecture of a built-in open_clip config (e.g. ``ViT-B-32``)
    with random weights; otherwise ``model_cfg`` (default: :func:`tiny_clip_config`).
    The same ``seed`` gives byte-identical weights, hence the same fingerprint.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    from catalog.atomic import atomic_path, atomic_write_text

    if base is not None:
        model_cfg = open_clip.get_model_config(base)
        if model_cfg is None:
            import difflib

            close = difflib.get_close_matches(base, open_clip.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown open_clip architecture {base!r}{hint}")
        kind = f"random-{base}"
    model_cfg = dict(model_cfg or tiny_clip_config())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    image_size = model_cfg["vision_cfg"]["image_size"]
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "image_size": image_size,
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
        # Read by evaluator.embedding.embed to name the model in the store (tiny-clip@<fp8>).
        "atelier": {"kind": kind, "seed": seed, "random_weights": True},
    }
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def build_tiny_clip(
    out_dir: str | Path,
    seed: int = 0,
    embed_dim: int = 16,
    image_size: int = 32,
    width: int = 16,
    layers: int = 2,
) -> Path:
    """A tiny random-weight open_clip folder, loadable offline by ``evaluator.embedding.embed.load_clip``."""
    cfg = tiny_clip_config(embed_dim=embed_dim, image_size=image_size, width=width, layers=layers)
    return build_random_clip(out_dir, model_cfg=cfg, seed=seed, kind="tiny-clip")
