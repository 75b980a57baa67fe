"""The base checkpoint loaded for training, and the parts each method trains.

Reads the base's weights (through the generation stage's loader, so a base is exactly
what ``atelier generate`` would load) and its checkpoints TOML; writes nothing.

* ``lora``: peft LoRA adapters on the UNet's attention projections (to_q, to_k, to_v,
  to_out.0) and, with ``train_text_encoder``, on the text encoders' (q/k/v/out_proj),
  as diffusers' ``train_text_to_image_lora.py``; everything else frozen.
* ``textual_inversion``: new placeholder tokens, initialised from ``initializer_token``;
  only their rows of the token embedding change (the others are put back after every
  optimizer step, as diffusers' ``textual_inversion.py``, so weight decay cannot move them).
* ``full``: the UNet (and the text encoders with ``train_text_encoder``) trained whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.errors import InputError
from evaluator.training.config import TrainingConfig

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
WEIGHT_DTYPES = {"no": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class TrainingModels:
    """The pipeline's parts, which of them train, and what a method added."""

    pipe: Any
    kind: str  # sd1 | sd2 | sdxl
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    noise_scheduler: Any
    prediction_type: str
    base_name: str
    base_spec: Any
    trainable: dict[str, Any] = field(default_factory=dict)  # "unet.<param>" -> parameter
    placeholder_ids: list[list[int]] = field(default_factory=list)  # per text encoder
    frozen_embeddings: list = field(default_factory=list)  # per text encoder: the original table

    @property
    def device(self):
        return self.unet.device


def base_spec(config: TrainingConfig):
    """(spec, specs) of ``config.base``: a name in ``config.checkpoints``, else a local path."""
    from evaluator.generation.checkpoints import CheckpointSpec, load_checkpoints
    from evaluator.generation.checkpoints.spec import suggest

    specs: dict = {}
    if config.checkpoints:
        specs = load_checkpoints(config.checkpoints)
        if config.base in specs:
            return specs[config.base], specs
    path = Path(config.base).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InputError(f"training config: field 'base': folder {path} is not a diffusers pipeline (no model_index.json)")
        source_type = "folder"
    elif path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise InputError(f"training config: field 'base': {path} must be a .safetensors file or a diffusers folder")
        source_type = "file"
    else:
        where = f" in {config.checkpoints}{suggest(config.base, list(specs))}" if specs else \
            " (no 'checkpoints' file given to look names up in)"
        raise InputError(f"training config: field 'base': {config.base!r} is neither a checkpoint name{where} "
                         "nor an existing diffusers folder / .safetensors file")
    name = path.resolve().name.removesuffix(".safetensors")
    spec = CheckpointSpec(name=name, source=str(path.resolve()), source_type=source_type, kind=None)
    return spec, {name: spec}


def load_models(config: TrainingConfig, base: tuple | None = None) -> TrainingModels:
    """Load the base (``base``: ``base_spec(config)``'s answer, when known) on ``config.device``
    in fp32, and prepare ``config.method``'s trainable parts.

    Frozen parts are cast to the mixed-precision dtype; trained parameters stay fp32
    (as ``cast_training_params`` in the diffusers examples) so small updates are not lost.
    """
    import torch
    from diffusers import DDPMScheduler

    from evaluator.generation.checkpoints import load_pipeline

    spec, specs = base or base_spec(config)
    pipe = load_pipeline(spec, specs, device=config.device, dtype="float32")
    text_encoders = [te for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if te is not None]
    tokenizers = [tok for tok in (pipe.tokenizer, getattr(pipe, "tokenizer_2", None)) if tok is not None]
    # Training draws noise the DDPM way whatever sampler the base ships with (as both examples).
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction_type = config.prediction_type or noise_scheduler.config.prediction_type
    models = TrainingModels(
        pipe, pipe.atelier_kind, pipe.unet, pipe.vae, text_encoders, tokenizers, noise_scheduler, prediction_type,
        spec.name, spec,
    )
    for module in (models.unet, models.vae, *models.text_encoders):
        module.requires_grad_(False)
    torch.manual_seed(config.seed)  # the LoRA initialisation is part of the run's seed
    {"lora": _add_lora, "textual_inversion": _add_tokens, "full": _unfreeze}[config.method](models, config)
    weight_dtype = getattr(torch, WEIGHT_DTYPES[config.mixed_precision])
    if weight_dtype != torch.float32:
        _cast_frozen(models, weight_dtype)
    if config.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        for te in models.text_encoders:
            te.gradient_checkpointing_enable()
    return models


def _named(models: TrainingModels) -> dict[str, Any]:
    modules = {"unet": models.unet} | {_encoder_name(i): te for i, te in enumerate(models.text_encoders)}
    return {f"{prefix}.{name}": p for prefix, module in modules.items()
            for name, p in module.named_parameters() if p.requires_grad}


def _encoder_name(index: int) -> str:
    return "text_encoder" if index == 0 else f"text_encoder_{index + 1}"


def _add_lora(models: TrainingModels, config: TrainingConfig) -> None:
    from peft import LoraConfig

    models.unet.add_adapter(LoraConfig(
        r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
        target_modules=list(UNET_LORA_TARGETS),
    ))
    if config.train_text_encoder:
        for te in models.text_encoders:
            _inject_text_lora(te, LoraConfig(
                r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                target_modules=list(TEXT_LORA_TARGETS),
            ))
    models.trainable = _named(models)


def _inject_text_lora(text_encoder, lora_config) -> None:
    """peft's own injection, as diffusers does for the UNet: transformers' ``add_adapter``
    demands a newer peft than the registry has, while its ``load_adapter`` (what
    ``load_lora_weights`` uses) works with this one."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(lora_config, text_encoder, adapter_name="default")
    text_encoder.peft_config = {"default": lora_config}


def _unfreeze(models: TrainingModels, config: TrainingConfig) -> None:
    models.unet.requires_grad_(True)
    if config.train_text_encoder:
        for te in models.text_encoders:
            te.requires_grad_(True)
    models.trainable = _named(models)


def placeholder_tokens(config: TrainingConfig) -> list[str]:
    """The tokens a textual inversion adds: ``<tok>``, then ``<tok>_1`` ... (diffusers' naming)."""
    return [config.placeholder_token] + [f"{config.placeholder_token}_{i}" for i in range(1, config.num_vectors)]


def training_caption(config: TrainingConfig, caption: str) -> str:
    """The caption as the text encoder sees it. Textual inversion: the placeholder is put in
    front when the caption lacks it (else its embedding gets no gradient), and spelled as
    its ``num_vectors`` tokens, as ``load_textual_inversion`` spells it at inference."""
    if config.method != "textual_inversion":
        return caption
    token = config.placeholder_token
    if token not in caption.split() and token not in caption:
        caption = f"{token}, {caption}" if caption else token
    return caption.replace(token, " ".join(placeholder_tokens(config))) if config.num_vectors > 1 else caption


def dropped_caption(config: TrainingConfig, caption: str, step: int, index: int) -> str:
    """``caption``, or "" for a ``caption_dropout_rate`` share of (step, image) pairs: the
    draw is seeded by (seed, step, index in the global batch), like the noise, so it does
    not depend on the batch layout or the number of processes."""
    if not config.caption_dropout_rate:
        return caption
    import torch

    from evaluator.training.objective import CAPTION_STREAM, sample_generator

    draw = float(torch.rand((), generator=sample_generator(config.seed, CAPTION_STREAM, step, index)))
    return "" if draw < config.caption_dropout_rate else caption


def _add_tokens(models: TrainingModels, config: TrainingConfig) -> None:
    import torch

    tokens = placeholder_tokens(config)
    for index, (tokenizer, te) in enumerate(zip(models.tokenizers, models.text_encoders, strict=True)):
        init_ids = tokenizer.encode(config.initializer_token, add_special_tokens=False)
        if len(init_ids) != 1:
            raise InputError(f"training config: field 'initializer_token': {config.initializer_token!r} is "
                             f"{len(init_ids)} tokens for the base's tokenizer; it must be exactly one")
        added = tokenizer.add_tokens(tokens)
        if added != len(tokens):
            raise InputError(f"training config: field 'placeholder_token': {config.placeholder_token!r} is already "
                             "a token of the base's tokenizer; choose a new word like '<my-style>'")
        te.resize_token_embeddings(len(tokenizer))
        ids = tokenizer.convert_tokens_to_ids(tokens)
        table = te.get_input_embeddings().weight
        with torch.no_grad():
            for token_id in ids:
                table[token_id] = table[init_ids[0]].clone()
        table.requires_grad_(True)
        models.placeholder_ids.append(list(ids))
        models.frozen_embeddings.append(table.detach().clone())
        models.trainable[f"{_encoder_name(index)}.token_embedding"] = table


def restore_other_embeddings(models: TrainingModels) -> None:
    """Put back every embedding row but the placeholders' (after each optimizer step)."""
    import torch

    with torch.no_grad():
        for te, ids, original in zip(models.text_encoders, models.placeholder_ids, models.frozen_embeddings,
                                     strict=True):
            table = te.get_input_embeddings().weight
            keep = torch.ones(table.shape[0], dtype=torch.bool, device=table.device)
            keep[ids] = False
            table[keep] = original[keep].to(table.dtype)


def learned_embeddings(models: TrainingModels) -> list:
    """The placeholder rows of each text encoder, [num_vectors, hidden], on the CPU in fp32."""
    return [te.get_input_embeddings().weight[ids].detach().float().cpu().clone()
            for te, ids in zip(models.text_encoders, models.placeholder_ids, strict=True)]


def _cast_frozen(models: TrainingModels, dtype) -> None:
    models.vae.to(dtype=dtype)
    for module in (models.unet, *models.text_encoders):
        trained = {id(p) for p in models.trainable.values()}
        for p in module.parameters():
            if id(p) not in trained:
                p.data = p.data.to(dtype)


def encode_text(models: TrainingModels, captions: list[str], sizes: list[tuple[int, int]]):
    """The UNet's conditioning for ``captions`` (SDXL: both encoders, pooled text, time ids).

    ``sizes`` are the (width, height) the images are trained at: SDXL's micro-conditioning
    takes them as original and target size, with no crop (buckets crop centrally, little).
    """
    import torch

    from evaluator.training.objective import Conditioning

    device = models.device
    states, pooled = [], None
    for tokenizer, te in zip(models.tokenizers, models.text_encoders, strict=True):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(device)
        if models.kind != "sdxl":
            return Conditioning(te(ids, return_dict=False)[0])
        out = te(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer of both encoders
        pooled = out[0]  # the pooled projection of the last encoder
    time_ids = torch.tensor([[h, w, 0, 0, h, w] for w, h in sizes], device=device, dtype=states[0].dtype)
    return Conditioning(torch.cat(states, dim=-1), {"text_embeds": pooled, "time_ids": time_ids})
