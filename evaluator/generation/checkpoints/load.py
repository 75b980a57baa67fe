"""Checkpoints loaded as diffusers pipelines, adapters fused, schedulers swapped.

Reads the weights (hub cache, diffusers folder or one file), the architecture configs
shipped in ``evaluator/generation/configs/`` and LoRA / textual inversion files. Writes
only the offline config folders ``prepare_config_dir`` builds in the cache (tokenizers
generated from open_clip's BPE vocabulary), so single files load with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from evaluator.generation.checkpoints.detect import (
    detect_kind,
    load_pickled_state_dict,
    pickle_reason,
)
from evaluator.generation.checkpoints.spec import (
    CLASS_TO_SAMPLER,
    DTYPES,
    KINDS,
    SCHEDULER_NAMES,
    SCHEDULERS,
    CheckpointError,
    CheckpointSpec,
    PickleRefusedError,
    TextualInversionSpec,
    is_pickle,
    pickle_message,
    resolve_source,
    suggest,
)

# The architecture configs (no weights) single files are loaded with.
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def torch_dtype(name: str | None, device: str):
    """fp32 on CPU (fp16 matmuls are slow or missing there), fp16 on CUDA, unless named."""
    import torch

    if name is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    key = DTYPES.get(str(name).removeprefix("torch."))
    if key is None:
        raise CheckpointError(f"dtype must be one of {', '.join(sorted(set(DTYPES.values())))} but is {name!r}{suggest(name, DTYPES)}")
    return getattr(torch, key)


def prepare_config_dir(kind: str) -> Path:
    """A complete offline config folder for ``kind``: shipped configs + generated tokenizers.

    ``from_single_file(config=...)`` wants a folder shaped like a hub repo without
    weights; the tokenizer files are written from open_clip's BPE file into a cache.
    """
    import shutil

    from evaluator.generation.tokenizer import (
        PAD_BANG,
        PAD_END,
        default_cache_dir,
        write_clip_tokenizer,
    )

    if kind not in KINDS:
        raise CheckpointError(f"kind must be one of {', '.join(KINDS)} but is {kind!r}{suggest(kind, KINDS)}")
    shipped = CONFIGS_DIR / kind
    if not (shipped / "model_index.json").is_file():
        raise CheckpointError(f"the shipped architecture config {shipped} is missing; reinstall atelier")
    digest = hashlib.sha256()
    for path in sorted(shipped.rglob("*.json")):
        digest.update(path.relative_to(shipped).as_posix().encode() + path.read_bytes())
    target = default_cache_dir() / "configs" / f"{kind}-{digest.hexdigest()[:12]}"
    if (target / ".complete").is_file():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp)
    index = json.loads((shipped / "model_index.json").read_text())
    # SD 1.x pads with the end token; SD 2.x and SDXL's second tokenizer pad with "!".
    write_clip_tokenizer(tmp / "tokenizer", pad_token=PAD_BANG if kind == "sd2" else PAD_END)
    if "tokenizer_2" in index:
        write_clip_tokenizer(tmp / "tokenizer_2", pad_token=PAD_BANG)
    (tmp / ".complete").write_text("ok\n")
    try:
        tmp.rename(target)
    except OSError:  # another rank got there first; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def pipeline_class(kind: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if kind == "sdxl" else StableDiffusionPipeline


def set_scheduler(pipe, name: str | None) -> str:
    """Swap the pipeline's scheduler by registry name; return the A1111 sampler label."""
    import diffusers

    if name in (None, "", "default"):
        return CLASS_TO_SAMPLER.get(type(pipe.scheduler).__name__, type(pipe.scheduler).__name__)
    if name not in SCHEDULERS:
        raise CheckpointError(f"unknown scheduler {name!r}{suggest(name, SCHEDULER_NAMES)}")
    class_name, extra, label = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    return label


def quiet_hf_libraries() -> None:
    """Silence diffusers' and transformers' own progress bars and notes.

    A user reads "Loading pipeline components" bars, "Writing model shards" and "No LoRA
    keys associated to CLIPTextModel" (a LoRA that trains the UNet only) as faults of
    atelier's run; atelier reports progress and real problems itself. Errors still show.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def load_pipeline(
    spec: CheckpointSpec,
    specs: dict[str, CheckpointSpec],
    device: str = "cpu",
    dtype: str | None = None,
    allow_pickle: bool = False,
    attention: str = "sdpa",
    offline: bool | None = None,
):
    """Load a checkpoint as a diffusers pipeline on ``device``, adapters applied and fused.

    ``dtype``: the run's choice, else the checkpoint's, else fp32 on CPU / fp16 on CUDA.
    LoRAs are fused into the weights after loading, so generation runs at the plain
    model's speed. ``offline`` (default: ``HF_HUB_OFFLINE``) forbids hub downloads.
    """

    if offline is None:
        from evaluator.workspace import settings

        offline = settings.hub_offline()
    quiet_hf_libraries()
    chosen = torch_dtype(dtype or spec.dtype, device)
    origin = resolve_source(spec, specs)
    kind = detect_kind(spec, specs, allow_pickle) if origin.source_type != "hub" else spec.kind or origin.kind
    if origin.source_type == "folder":
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(origin.source, dtype=chosen, local_files_only=True)
        except Exception as exc:
            raise CheckpointError(f"{origin.where('source')}: cannot load diffusers folder {origin.source}: {exc}") from exc
    elif origin.source_type == "hub":
        from diffusers import DiffusionPipeline

        from evaluator.workspace.hub import hub_offline

        offline = offline or hub_offline()  # no minute of retries where the hub cannot answer
        try:
            pipe = DiffusionPipeline.from_pretrained(origin.source, dtype=chosen, local_files_only=offline)
        except Exception as exc:
            raise CheckpointError(
                f"{origin.where('source')}: cannot load hub model {origin.source!r} "
                f"({'offline: it is not in the local hub cache' if offline else exc}); download it once with "
                f"`huggingface-cli download {origin.source}` or point source at a local folder or file"
            ) from exc
    else:
        pipe = _load_single_file(origin, kind, chosen, allow_pickle)
    pipe = pipe.to(device)
    if attention == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())
    _apply_adapters(pipe, spec, allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    if kind is None:  # a hub model: read it off the loaded pipeline
        kind = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else (
            "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"
        )
    pipe.atelier_kind = kind
    return pipe


def _load_single_file(origin: CheckpointSpec, kind: str, dtype, allow_pickle: bool):
    import pickle

    path = Path(origin.source)
    where = origin.where("source")
    if is_pickle(path) and not allow_pickle:
        raise PickleRefusedError(pickle_message(path, where))
    config_dir = origin.config or prepare_config_dir(kind)
    missing = [p for p in ("model_index.json", "unet/config.json", "vae/config.json") if not (config_dir / p).is_file()]
    if missing:
        raise CheckpointError(f"{origin.where('config')}: {config_dir} lacks {', '.join(missing)}")
    cls = pipeline_class(kind)
    try:
        return cls.from_single_file(str(path), config=str(config_dir), local_files_only=True, dtype=dtype)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{where}: {path} holds more than tensors (torch.load(weights_only=True) refused it: "
            f"{pickle_reason(exc)}); re-save it as .safetensors from a trusted environment"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{where}: cannot load single file {path} as {kind} with the architecture config {config_dir}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. If this is not a standard "
            f"{kind} checkpoint, set kind, or set config = a local diffusers folder with its model_index.json, "
            "unet/vae/text_encoder/scheduler configs and tokenizer files"
        ) from exc


def _apply_adapters(pipe, spec: CheckpointSpec, allow_pickle: bool) -> None:
    if spec.lora:
        names = []
        for index, lora in enumerate(spec.lora):
            where = f"{spec.where(f'lora[{index}]')}"
            source = load_pickled_state_dict(lora.path, allow_pickle, where) if is_pickle(lora.path) else str(lora.path)
            name = f"lora{index}"
            try:
                pipe.load_lora_weights(source, adapter_name=name)
            except Exception as exc:
                raise CheckpointError(f"{where}: {lora.path} is not a LoRA this pipeline accepts: {str(exc).splitlines()[0]}") from exc
            names.append(name)
        pipe.set_adapters(names, adapter_weights=[lora.scale for lora in spec.lora])
        # Fused LoRA weights cost nothing per step; the PEFT wrappers would.
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
    for index, ti in enumerate(spec.textual_inversion):
        where = spec.where(f"textual_inversion[{index}]")
        state = load_pickled_state_dict(ti.path, allow_pickle, where) if is_pickle(ti.path) else None
        try:
            _load_textual_inversion(pipe, ti, state)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{where}: {ti.path} is not an embedding this pipeline accepts: {str(exc).splitlines()[0]}") from exc


def _load_textual_inversion(pipe, ti: TextualInversionSpec, state: dict | None) -> None:
    from safetensors.torch import load_file

    state = state if state is not None else load_file(str(ti.path))
    if "clip_l" in state and "clip_g" in state and hasattr(pipe, "text_encoder_2"):  # SDXL embeddings
        pipe.load_textual_inversion(state["clip_l"], token=ti.token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(state["clip_g"], token=ti.token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
        return
    pipe.load_textual_inversion(state, token=ti.token)
