"""The files a saved step is made of, in the formats users' other tools read.

Writes into one step folder (the loop writes it under a temporary name and renames it
whole, so a step folder is never half-written); reads nothing but the models in memory.

* LoRA: ``pytorch_lora_weights.safetensors``, diffusers' format (``unet.…lora_A/lora_B``
  keys, the peft config in the metadata so ``alpha`` survives) that ``load_lora_weights``
  reads; and ``<output_name>.safetensors`` in kohya / A1111 format: one
  ``lora_unet_<module path with _>`` (``lora_te_…``; SDXL ``lora_te1_…`` / ``lora_te2_…``)
  per module with ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``, plus the
  ``ss_*`` training metadata sd-scripts writes and the ``modelspec.*`` keys of the SAI
  model spec 1.0.1.
* Textual inversion: ``learned_embeds.safetensors`` (diffusers: ``{token: [n, dim]}``;
  SDXL adds ``learned_embeds_2.safetensors``) and ``<output_name>.safetensors`` in
  A1111's form (``emb_params``; SDXL ``clip_l`` + ``clip_g``).
* Full: ``<output_name>/``, a diffusers pipeline folder (``save_pretrained``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.training.config import TrainingConfig
from evaluator.training.models import TrainingModels

DIFFUSERS_LORA_NAME = "pytorch_lora_weights.safetensors"
LEARNED_EMBEDS_NAME = "learned_embeds.safetensors"
# kohya's names for the base architectures (ss_base_model_version) and the spec's (modelspec.architecture).
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURES = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sdxl": "stable-diffusion-xl-v1-base"}
IMPL_DIFFUSERS = "diffusers"
IMPL_STABILITY_AI = "https://github.com/Stability-AI/generative-models"


@dataclass
class RunFacts:
    """What the metadata says about the run beyond the config (filled by the loop)."""

    step: int
    started_at: float  # unix time
    session_id: int
    base_name: str
    base_fingerprint: str | None
    train_items: list = field(default_factory=list)  # TrainingItem of the training side
    num_validation_images: int = 0
    batches_per_epoch: int = 1
    world_size: int = 1


def kohya_module_name(prefix: str, module_path: str) -> str:
    """``lora_unet_down_blocks_0_attentions_0_…_to_q`` from a module path (dots become underscores)."""
    return f"{prefix}_{module_path.replace('.', '_')}"


def kohya_text_prefixes(kind: str) -> list[str]:
    """One prefix per text encoder: SD 1.x/2.x ``lora_te``; SDXL ``lora_te1`` and ``lora_te2``."""
    return ["lora_te1", "lora_te2"] if kind == "sdxl" else ["lora_te"]


def peft_state(module) -> dict[str, Any]:
    """The LoRA factors of a peft-adapted module: ``<module path>.lora_A.weight`` ... (fp32, CPU)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(module).items()}


def text_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Text-encoder LoRA keys under ``text_model.``: transformers 5 dropped that level from
    CLIPTextModel, but kohya's names (``lora_te_text_model_encoder_…``), A1111 and
    transformers 4 expect it; diffusers on transformers 5 reads both."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}


def to_kohya(state: dict[str, Any], prefix: str, alpha: float) -> dict[str, Any]:
    """peft LoRA keys -> kohya keys, with one ``.alpha`` scalar per module."""
    import torch

    out: dict[str, Any] = {}
    for key, value in state.items():
        for peft_part, kohya_part in ((".lora_A.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_up.weight")):
            if key.endswith(peft_part):
                name = kohya_module_name(prefix, key[: -len(peft_part)])
                out[name + kohya_part] = value
                out[name + ".alpha"] = torch.tensor(float(alpha))
                break
        else:
            raise KeyError(f"LoRA key {key!r} is neither lora_A nor lora_B")
    return out


def tag_frequency(items: list) -> dict[str, dict[str, int]]:
    """kohya's ``ss_tag_frequency``: per dataset folder (``<repeats>_<concept>``), each
    comma-separated caption tag's count over the folder's images."""
    by_dir: dict[str, Counter] = {}
    for item in items:
        folder = f"{item.repeats}_{item.concept}"
        tags = [t.strip() for t in item.caption.split(",") if t.strip()]
        by_dir.setdefault(folder, Counter()).update(tags)
    return {folder: dict(sorted(counter.items())) for folder, counter in sorted(by_dir.items())}


def dataset_dirs(items: list) -> dict[str, dict[str, int]]:
    """kohya's ``ss_dataset_dirs``: per folder, its repeats and image count."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        entry = out.setdefault(f"{item.repeats}_{item.concept}", {"n_repeats": item.repeats, "img_count": 0})
        entry["img_count"] += 1
    return dict(sorted(out.items()))


def ss_metadata(config: TrainingConfig, models: TrainingModels, facts: RunFacts) -> dict[str, str]:
    """sd-scripts' ``ss_*`` keys (strings, as kohya writes them) for a LoRA of this run."""
    images = sum(i.repeats for i in facts.train_items)
    total_batch = config.train_batch_size * config.gradient_accumulation_steps * facts.world_size
    values: dict[str, Any] = {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": facts.started_at,
        "ss_training_finished_at": time.time(),
        "ss_output_name": config.output_name,
        "ss_sd_model_name": facts.base_name,
        "ss_new_sd_model_hash": facts.base_fingerprint,
        "ss_base_model_version": BASE_MODEL_VERSIONS.get(models.kind, models.kind),
        "ss_v2": models.kind == "sd2",
        "ss_network_module": "networks.lora",
        "ss_network_dim": config.rank,
        "ss_network_alpha": config.lora_alpha,
        "ss_network_dropout": None,
        "ss_learning_rate": config.learning_rate,
        "ss_unet_lr": config.learning_rate,
        "ss_text_encoder_lr": config.learning_rate if config.train_text_encoder else None,
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_lr_warmup_steps": config.lr_warmup_steps,
        "ss_max_train_steps": config.max_train_steps,
        "ss_steps": facts.step,
        "ss_epoch": facts.step * config.gradient_accumulation_steps // max(1, facts.batches_per_epoch),
        "ss_num_batches_per_epoch": facts.batches_per_epoch,
        "ss_num_train_images": images,
        "ss_num_reg_images": 0,
        "ss_num_validation_images": facts.num_validation_images,
        "ss_validation_split": config.validation_fraction,
        "ss_validation_seed": config.seed,
        "ss_batch_size_per_device": config.train_batch_size,
        "ss_total_batch_size": total_batch,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_mixed_precision": config.mixed_precision,
        "ss_full_fp16": False,
        "ss_resolution": f"({config.resolution}, {config.resolution})",
        "ss_enable_bucket": True,
        "ss_min_bucket_reso": config.min_bucket_reso,
        "ss_max_bucket_reso": config.max_bucket_reso,
        "ss_bucket_no_upscale": False,
        "ss_seed": config.seed,
        "ss_noise_offset": config.noise_offset or None,
        "ss_min_snr_gamma": config.min_snr_gamma,
        "ss_loss_type": "l2",
        "ss_max_grad_norm": config.max_grad_norm,
        "ss_optimizer": f"torch.optim.adamw.AdamW(weight_decay={config.adam_weight_decay})",
        "ss_clip_skip": None,
        "ss_caption_dropout_rate": config.caption_dropout_rate,
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_training_comment": f"atelier train, method {config.method}",
        "ss_tag_frequency": json.dumps(tag_frequency(facts.train_items), ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dataset_dirs(facts.train_items), ensure_ascii=False),
    }
    if facts.base_fingerprint is None:  # unknown: no key rather than a wrong hash A1111 would show
        values.pop("ss_new_sd_model_hash")
    return {key: str(value) for key, value in values.items()}


def modelspec_metadata(config: TrainingConfig, models: TrainingModels, facts: RunFacts, adapter: str) -> dict[str, str]:
    """The SAI model spec 1.0.1 keys (``modelspec.*``) for an adapter (``lora`` | ``textual-inversion``)."""
    sdxl = models.kind == "sdxl"
    implementation = IMPL_STABILITY_AI if (sdxl or adapter == "textual-inversion") else IMPL_DIFFUSERS
    return {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{ARCHITECTURES.get(models.kind, models.kind)}/{adapter}",
        "modelspec.implementation": implementation,
        "modelspec.title": f"{config.output_name} step {facts.step}",
        "modelspec.resolution": f"{config.resolution}x{config.resolution}",
        "modelspec.date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if models.prediction_type == "v_prediction" else "epsilon",
        "modelspec.timestep_range": f"0,{models.noise_scheduler.config.num_train_timesteps}",
        "modelspec.description": f"{config.method} of {facts.base_name}, trained with atelier",
        **({"modelspec.trigger_phrase": config.placeholder_token} if adapter == "textual-inversion" else {}),
    }


def save_lora(step_dir: Path, config: TrainingConfig, models: TrainingModels, facts: RunFacts) -> list[Path]:
    """Both LoRA files of a step: diffusers' and kohya's."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    unet_state = peft_state(models.unet)
    text_states = [text_model_keys(peft_state(te)) for te in models.text_encoders] if config.train_text_encoder else []
    pipeline_cls = type(models.pipe)
    text_kwargs = {}
    names = ["text_encoder_lora_layers", "text_encoder_2_lora_layers"]
    meta_names = ["text_encoder_lora_adapter_metadata", "text_encoder_2_lora_adapter_metadata"]
    for index, state in enumerate(text_states):
        text_kwargs[names[index]] = convert_state_dict_to_diffusers(state)
        text_kwargs[meta_names[index]] = models.text_encoders[index].peft_config["default"].to_dict()
    pipeline_cls.save_lora_weights(
        save_directory=str(step_dir), unet_lora_layers=convert_state_dict_to_diffusers(unet_state),
        weight_name=DIFFUSERS_LORA_NAME, unet_lora_adapter_metadata=models.unet.peft_config["default"].to_dict(),
        **text_kwargs,
    )
    kohya = to_kohya(unet_state, "lora_unet", config.lora_alpha)
    for prefix, state in zip(kohya_text_prefixes(models.kind), text_states, strict=False):
        kohya.update(to_kohya(state, prefix, config.lora_alpha))
    metadata = ss_metadata(config, models, facts) | modelspec_metadata(config, models, facts, "lora")
    kohya_path = step_dir / f"{config.output_name}.safetensors"
    save_file(dict(sorted(kohya.items())), str(kohya_path), metadata=metadata)
    return [step_dir / DIFFUSERS_LORA_NAME, kohya_path]


def save_textual_inversion(step_dir: Path, config: TrainingConfig, models: TrainingModels, facts: RunFacts) -> list[Path]:
    """``learned_embeds.safetensors`` (+ ``_2`` for SDXL) and the A1111 embedding."""
    from safetensors.torch import save_file

    from evaluator.training.models import learned_embeddings

    vectors = learned_embeddings(models)
    paths = []
    for index, tensor in enumerate(vectors):
        name = LEARNED_EMBEDS_NAME if index == 0 else LEARNED_EMBEDS_NAME.replace(".safetensors", f"_{index + 1}.safetensors")
        save_file({config.placeholder_token: tensor}, str(step_dir / name))
        paths.append(step_dir / name)
    a1111 = {"clip_l": vectors[0], "clip_g": vectors[1]} if models.kind == "sdxl" else {"emb_params": vectors[0]}
    metadata = modelspec_metadata(config, models, facts, "textual-inversion") | {
        "name": config.output_name, "step": str(facts.step), "sd_checkpoint_name": facts.base_name,
        "token": config.placeholder_token,
    }
    a1111_path = step_dir / f"{config.output_name}.safetensors"
    save_file(a1111, str(a1111_path), metadata=metadata)
    return [*paths, a1111_path]


def save_full(step_dir: Path, config: TrainingConfig, models: TrainingModels, facts: RunFacts) -> list[Path]:
    """The whole pipeline, trained parts included, as a diffusers folder ``<output_name>/``."""
    from evaluator.generation.checkpoints import quiet_hf_libraries

    folder = step_dir / config.output_name
    quiet_hf_libraries()  # transformers' "Writing model shards" bar is not atelier's progress
    models.pipe.save_pretrained(str(folder), safe_serialization=True)
    return [folder]


SAVERS = {"lora": save_lora, "textual_inversion": save_textual_inversion, "full": save_full}


def save_weights(step_dir: Path, config: TrainingConfig, models: TrainingModels, facts: RunFacts) -> list[Path]:
    """The method's files for one step, written into ``step_dir``; returns their paths."""
    return SAVERS[config.method](step_dir, config, models, facts)
