"""Tiny random-weight Stable Diffusion pipelines, LoRAs and "fine-tunes", built locally.

No weights can be downloaded here, so the tests, the demo and the benchmark run the
real diffusers code on models built from scratch, the way diffusers tests itself: the
same classes as SD 1.x / SDXL (UNet2DConditionModel, AutoencoderKL, CLIP text
encoders, the CLIP BPE tokenizer of :mod:`evaluator.generation.tokenizer`), with a handful of
channels. A 64x64 image takes a fraction of a second on a CPU; the images are noise
with structure, but every code path (batching, seeds, LoRA, single files, PNG metadata)
is the one a real checkpoint takes.

``size="bench"`` builds a wider UNet with SD's real block layout (4 levels, cross
attention in the first three), so that a benchmark ratio is dominated by the model,
as it is on a GPU with real weights.

Reads nothing but the tokenizer vocabulary shipped with open_clip; writes diffusers
pipeline folders, LoRA / textual-inversion files and single-file checkpoints.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Merges kept in the tiny tokenizer: a valid BPE with 1,514 tokens instead of 49,408,
# so the text encoder's embedding table stays small (the full one would dominate).
TINY_MERGES = 1000
KINDS = ("sd1", "sdxl")
SIZES = ("tiny", "bench")


def _check(kind: str, size: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} but is {kind!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)} but is {size!r}")


def _text_config(hidden: int, vocab: int, projection: int | None = None, pad_id: int = 1):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=pad_id,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        layer_norm_eps=1e-5,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=vocab,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if projection is None else "gelu",
        projection_dim=projection or hidden,
    )


# Width of the (first) tiny text encoder; the UNet's cross attention follows it.
TEXT_HIDDEN = 32


def _unet_blocks(size: str) -> dict:
    """UNet block layout: two small levels (tiny), or SD's four (bench)."""
    if size == "tiny":
        return dict(
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=(2, 4),
        )
    # SD's layout: four levels, cross attention in the first three, 2 resnets each
    return dict(
        block_out_channels=(64, 128, 192, 192),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        norm_num_groups=32,
        attention_head_dim=8,
    )


def _sd1_unet_and_text(tokenizer, size: str) -> tuple[object, dict]:
    """(UNet, text components) of an SD 1.x pipeline; built in this order from the seeded RNG."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    vocab = len(tokenizer)
    latent = 32 if size == "tiny" else 16  # the default image: 64 px tiny, 128 px bench
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, cross_attention_dim=TEXT_HIDDEN, **_unet_blocks(size)
    )
    text = {
        "text_encoder": CLIPTextModel(_text_config(TEXT_HIDDEN, vocab, pad_id=vocab - 1)),
        "tokenizer": tokenizer,
    }
    return unet, text


def _sdxl_unet_and_text(tokenizer, size: str) -> tuple[object, dict]:
    """(UNet, text components) of an SDXL pipeline: two text encoders, time conditioning."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from evaluator.generation.tokenizer import PAD_BANG, load_clip_tokenizer

    vocab = len(tokenizer)
    latent = 32 if size == "tiny" else 16
    time_dim = 8
    # The second encoder must be wider than the first (as in SDXL: 768 vs 1280):
    # diffusers' single-file loader tells the two apart by their width.
    hidden_2 = 48
    unet = UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=TEXT_HIDDEN + hidden_2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=hidden_2 + 6 * time_dim,
        **_unet_blocks(size),
    )
    text = {
        "text_encoder": CLIPTextModel(_text_config(TEXT_HIDDEN, vocab, pad_id=vocab - 1)),
        "text_encoder_2": CLIPTextModelWithProjection(_text_config(hidden_2, vocab, projection=hidden_2, pad_id=0)),
        "tokenizer": tokenizer,
        "tokenizer_2": load_clip_tokenizer(n_merges=TINY_MERGES, pad_token=PAD_BANG),
    }
    return unet, text


def _tiny_vae(size: str):
    """tiny: 2 levels (latents at 1/2 of the image side, so 64 px -> 32x32 latents);
    bench: 4 levels like SD's VAE (1/8: 128 px -> 16x16 latents)."""
    from diffusers import AutoencoderKL

    vae_levels = 2 if size == "tiny" else 4
    return AutoencoderKL(
        block_out_channels=(16, 32) if size == "tiny" else (16, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_levels,
        up_block_types=("UpDecoderBlock2D",) * vae_levels,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64 if size == "tiny" else 128,
    )


def _euler_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_tiny_components(kind: str = "sd1", seed: int = 0, size: str = "tiny") -> dict:
    """The modules of a tiny pipeline (not saved), seeded so a rebuild is identical.

    The weights depend on the order the modules are made in (UNet, text encoders, VAE):
    keep it, or every saved tiny model (and the demo store's digest) changes.
    """
    import torch

    from evaluator.generation.tokenizer import load_clip_tokenizer

    _check(kind, size)
    tokenizer = load_clip_tokenizer(n_merges=TINY_MERGES)
    torch.manual_seed(seed)
    unet_and_text = _sd1_unet_and_text if kind == "sd1" else _sdxl_unet_and_text
    unet, components = unet_and_text(tokenizer, size)
    components.update(unet=unet, vae=_tiny_vae(size), scheduler=_euler_scheduler())
    return components


def build_tiny_pipeline(out_dir: str | Path, kind: str = "sd1", seed: int = 0, size: str = "tiny") -> Path:
    """Save a random-weight diffusers pipeline folder (``save_pretrained``) and return it.

    The folder loads with ``from_pretrained(..., local_files_only=True)`` like any
    local diffusers checkpoint; a rebuild with the same seed has the same weights.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from evaluator.generation.checkpoints import quiet_hf_libraries

    quiet_hf_libraries()
    components = build_tiny_components(kind, seed=seed, size=size)
    if kind == "sd1":
        pipe = StableDiffusionPipeline(
            **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    else:
        pipe = StableDiffusionXLPipeline(**components)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def count_parameters(pipeline_dir: str | Path) -> dict[str, int]:
    """Parameters per weight file of a saved pipeline (for the docs and the bench)."""
    from safetensors import safe_open

    counts = {}
    for path in sorted(Path(pipeline_dir).glob("*/*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            counts[path.parent.name] = sum(_numel(handle.get_slice(k).get_shape()) for k in handle.keys())
    return counts


def _numel(shape) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


# --------------------------------------------------------------------------- LoRA


def _attention_modules(unet_state: dict) -> list[str]:
    """The attention projections a LoRA usually targets (to_q/k/v/out.0) of a UNet."""
    names = set()
    for key in unet_state:
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            marker = f".{proj}.weight"
            if key.endswith(marker) and ".attn" in key:
                names.add(key[: -len(".weight")])
    return sorted(names)


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with the metadata in the order given.

    safetensors keeps the metadata in a hash map whose order changes from one process to
    the next, so the same tensors gave different bytes, and with them a different
    checkpoint fingerprint and "Model hash" in every image's PNG text. The header is
    rewritten with the same keys in a fixed order (same length, so offsets hold).
    """
    import struct

    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header = {"__metadata__": dict(metadata), **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > length:  # cannot happen for the same keys; keep the library's bytes
        Path(path).write_bytes(data)
        return
    Path(path).write_bytes(data[:8] + text.ljust(length, b" ") + data[8 + length :])


def build_tiny_lora(pipeline_dir: str | Path, out_file: str | Path, rank: int = 4, seed: int = 1, scale: float = 0.5) -> Path:
    """A LoRA (PEFT key format) on the UNet's attention projections of a saved pipeline.

    Both factors are random (a trained LoRA has a non-zero B), so applying it with
    ``pipe.load_lora_weights(out_file)`` changes the image. ``scale`` sizes B relative
    to the layer's weights.
    """
    import torch
    from safetensors.torch import load_file

    from catalog.atomic import atomic_path

    unet_file = _weight_file(Path(pipeline_dir) / "unet")
    state = load_file(str(unet_file))
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for module in _attention_modules(state):
        weight = state[f"{module}.weight"]
        out_features, in_features = weight.shape[0], weight.shape[1]
        a = torch.randn(rank, in_features, generator=generator) / in_features**0.5
        b = torch.randn(out_features, rank, generator=generator) * (scale * float(weight.float().std()) / rank**0.5)
        lora[f"unet.{module}.lora_A.weight"] = a.contiguous()
        lora[f"unet.{module}.lora_B.weight"] = b.contiguous()
    if not lora:
        raise ValueError(f"{unet_file}: no attention projections found for a LoRA")
    with atomic_path(out_file) as tmp:
        save_safetensors(lora, tmp, {"format": "pt", "atelier": "tiny-lora", "rank": str(rank)})
    return Path(out_file)


def build_textual_inversion(pipeline_dir: str | Path, out_file: str | Path, token: str = "<atelier-style>", seed: int = 2) -> Path:
    """A textual-inversion embedding (A1111 ``emb_params`` format) sized for the pipeline."""
    import torch
    from safetensors.torch import save_file

    from catalog.atomic import atomic_path

    config = json.loads((Path(pipeline_dir) / "text_encoder" / "config.json").read_text())
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(1, int(config["hidden_size"]), generator=generator) * 0.5
    with atomic_path(out_file) as tmp:
        save_file({"emb_params": vector}, str(tmp), metadata={"token": token})
    return Path(out_file)


# ---------------------------------------------------------------------- fine-tune


def build_finetune(pipeline_dir: str | Path, out_dir: str | Path, noise: float = 0.05, seed: int = 3, components: tuple[str, ...] = ("unet",)) -> Path:
    """Copy a saved pipeline with Gaussian noise added to some components' weights.

    ``noise`` is relative to each tensor's standard deviation, so it means the same
    for every layer; the copy is a "fine-tune" whose images differ from the base's
    by an amount that grows with ``noise``.
    """
    import torch
    from safetensors.torch import load_file, save_file

    if noise < 0:
        raise ValueError(f"noise must be >= 0 but is {noise}")
    src, out = Path(pipeline_dir), Path(out_dir)
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    generator = torch.Generator().manual_seed(seed)
    for component in components:
        weight_file = _weight_file(tmp / component)
        state = load_file(str(weight_file))
        for tensor in state.values():
            if tensor.is_floating_point() and tensor.numel() > 1:
                spread = float(tensor.float().std()) or 1.0
                tensor.add_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * noise * spread)
        save_file(state, str(weight_file), metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _weight_file(component_dir: Path) -> Path:
    files = sorted(component_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{component_dir}: no .safetensors weights (expected diffusion_pytorch_model.safetensors or model.safetensors)")
    return files[0]


# -------------------------------------------------------------------- single file


def _unet_to_ldm(state: dict, config: dict) -> dict:
    """Rename a diffusers UNet state dict to the original (LDM / A1111) layout."""
    per = int(config["layers_per_block"])
    levels = len(config["block_out_channels"])
    mapping: dict[str, str] = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(levels):
        for j in range(per):
            index = (per + 1) * i + j + 1
            mapping[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{index}.0."
            mapping[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
        if i < levels - 1:
            mapping[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(per + 1) * (i + 1)}.0.op."
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(per + 1):
            index = (per + 1) * i + j
            mapping[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{index}.0."
            mapping[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{index}.1."
        if i < levels - 1:
            slot = 2 if has_attention else 1
            mapping[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(per + 1) * i + per}.{slot}."
    resnet_parts = {
        "norm1.": "in_layers.0.",
        "conv1.": "in_layers.2.",
        "norm2.": "out_layers.0.",
        "conv2.": "out_layers.3.",
        "time_emb_proj.": "emb_layers.1.",
        "conv_shortcut.": "skip_connection.",
    }
    out = {}
    for key, value in state.items():
        new = None
        for prefix in sorted(mapping, key=len, reverse=True):
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
                    for hf, ldm in resnet_parts.items():
                        if rest.startswith(hf):
                            rest = ldm + rest[len(hf) :]
                            break
                new = mapping[prefix] + rest
                break
        if new is None:
            raise KeyError(f"UNet key {key!r} has no original-layout name")
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict, config: dict) -> dict:
    """Rename a diffusers AutoencoderKL state dict to the original layout (first_stage_model)."""
    levels = len(config["block_out_channels"])
    mapping = {
        "encoder.conv_norm_out.": "encoder.norm_out.",
        "decoder.conv_norm_out.": "decoder.norm_out.",
        "encoder.mid_block.resnets.0.": "encoder.mid.block_1.",
        "encoder.mid_block.resnets.1.": "encoder.mid.block_2.",
        "encoder.mid_block.attentions.0.": "encoder.mid.attn_1.",
        "decoder.mid_block.resnets.0.": "decoder.mid.block_1.",
        "decoder.mid_block.resnets.1.": "decoder.mid.block_2.",
        "decoder.mid_block.attentions.0.": "decoder.mid.attn_1.",
    }
    for i in range(levels):
        mapping[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down.{i}.block."
        mapping[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        mapping[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up.{levels - 1 - i}.block."
        mapping[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for key, value in state.items():
        new = key
        for prefix in sorted(mapping, key=len, reverse=True):
            if key.startswith(prefix):
                new = mapping[prefix] + key[len(prefix) :]
                break
        new = new.replace("conv_shortcut.", "nin_shortcut.")
        if ".attn_1." in new:
            head, rest = new.split(".attn_1.", 1)
            for hf, ldm in attention.items():
                if rest.startswith(hf):
                    rest = ldm + rest[len(hf) :]
                    break
            if rest.endswith("weight") and value.ndim == 2:  # the original uses 1x1 convs
                value = value[:, :, None, None]
            new = f"{head}.attn_1.{rest}"
        out["first_stage_model." + new] = value
    return out


def _clip_to_ldm(state: dict, prefix: str) -> dict:
    """A transformers CLIPTextModel state dict under the original ``...transformer.text_model.`` prefix."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        name = key if key.startswith("text_model.") else "text_model." + key
        out[prefix + name] = value
    return out


def _open_clip_to_ldm(state: dict, prefix: str) -> dict:
    """A CLIPTextModelWithProjection state dict in open_clip's layout (SDXL's second encoder)."""
    import torch

    flat = {k.removeprefix("text_model."): v for k, v in state.items() if not k.endswith("position_ids")}
    out = {
        prefix + "token_embedding.weight": flat.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": flat.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": flat.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": flat.pop("final_layer_norm.bias"),
        prefix + "text_projection": flat.pop("text_projection.weight").T.contiguous(),
    }
    layers = sorted({int(k.split(".")[2]) for k in flat if k.startswith("encoder.layers.")})
    for n in layers:
        src = f"encoder.layers.{n}."
        dst = f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [flat.pop(src + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")]
            )
            out[dst + f"attn.out_proj.{kind}"] = flat.pop(src + f"self_attn.out_proj.{kind}")
            out[dst + f"ln_1.{kind}"] = flat.pop(src + f"layer_norm1.{kind}")
            out[dst + f"ln_2.{kind}"] = flat.pop(src + f"layer_norm2.{kind}")
            out[dst + f"mlp.c_fc.{kind}"] = flat.pop(src + f"mlp.fc1.{kind}")
            out[dst + f"mlp.c_proj.{kind}"] = flat.pop(src + f"mlp.fc2.{kind}")
    if flat:
        raise KeyError(f"text_encoder_2 keys with no open_clip name: {sorted(flat)[:5]}")
    return out


def save_single_file(pipeline_dir: str | Path, out_file: str | Path) -> Path:
    """Write a saved SD 1.x / SDXL diffusers pipeline as one original-layout ``.safetensors``.

    The layout is the one A1111/ComfyUI checkpoints use (``model.diffusion_model.``,
    ``first_stage_model.``, ``cond_stage_model.transformer.`` or SDXL's
    ``conditioner.embedders.{0,1}``), so ``from_single_file`` reads it back. Loading it
    still needs the architecture configs; for a tiny pipeline, the pipeline folder itself
    (``config=pipeline_dir``).
    """
    from safetensors.torch import load_file

    from catalog.atomic import atomic_path

    src = Path(pipeline_dir)
    index = json.loads((src / "model_index.json").read_text())
    unet_config = json.loads((src / "unet" / "config.json").read_text())
    vae_config = json.loads((src / "vae" / "config.json").read_text())
    state = _unet_to_ldm(load_file(str(_weight_file(src / "unet"))), unet_config)
    state.update(_vae_to_ldm(load_file(str(_weight_file(src / "vae"))), vae_config))
    text = load_file(str(_weight_file(src / "text_encoder")))
    if "text_encoder_2" in index:
        state.update(_clip_to_ldm(text, "conditioner.embedders.0.transformer."))
        text_2 = load_file(str(_weight_file(src / "text_encoder_2")))
        state.update(_open_clip_to_ldm(text_2, "conditioner.embedders.1.model."))
    else:
        state.update(_clip_to_ldm(text, "cond_stage_model.transformer."))
    state = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(out_file) as tmp:
        save_safetensors(state, tmp, {"format": "pt", "atelier": "single-file"})
    return Path(out_file)
