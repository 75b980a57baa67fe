"""Which architecture (sd1 / sd2 / sdxl) a checkpoint is, from its files alone.

Reads ``model_index.json`` and the UNet / text-encoder configs of a diffusers folder,
the header of a ``.safetensors`` file, or a pickled state dict (``torch.load`` with
``weights_only=True``, only behind ``--allow-pickle``); also looks in the local hub
cache, never online. Writes nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from evaluator.generation.checkpoints.spec import (
    CheckpointError,
    CheckpointSpec,
    PickleRefusedError,
    is_pickle,
    pickle_message,
    resolve_source,
)


def detect_kind(spec: CheckpointSpec, specs: dict[str, CheckpointSpec] | None = None, allow_pickle: bool = False) -> str:
    """sd1 / sd2 / sdxl from the spec, model_index.json, the UNet config, or state-dict keys."""
    if spec.kind:
        return spec.kind
    origin = resolve_source(spec, specs or {spec.name: spec})
    if origin is not spec and origin.kind:
        return origin.kind
    if origin.source_type == "folder":
        return kind_of_folder(Path(origin.source))
    if origin.source_type == "file":
        return kind_of_file(Path(origin.source), allow_pickle=allow_pickle, where=origin.where("source"))
    cached = hub_cached_file(origin.source, "model_index.json")
    if cached is not None:
        return kind_of_folder(cached.parent)
    raise CheckpointError(
        f"{spec.where('kind')}: cannot detect the kind of hub model {origin.source!r} offline "
        f"(it is not in the local hub cache); set kind = \"sd1\", \"sd2\" or \"sdxl\""
    )


def hub_cached_file(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def kind_of_folder(folder: Path) -> str:
    index = json.loads((folder / "model_index.json").read_text())
    if "text_encoder_2" in index or "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    unet_config = folder / "unet" / "config.json"
    if unet_config.is_file():
        unet = json.loads(unet_config.read_text())
        if unet.get("addition_embed_type") == "text_time":
            return "sdxl"
        if unet.get("cross_attention_dim") == 1024:
            return "sd2"
    text_config = folder / "text_encoder" / "config.json"
    if text_config.is_file() and json.loads(text_config.read_text()).get("hidden_size") == 1024:
        return "sd2"
    return "sd1"


def kind_of_keys(keys, where: str) -> str:
    keys = list(keys)
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    sample = ", ".join(keys[:3]) or "no tensors at all"
    raise CheckpointError(
        f"{where}: cannot tell SD 1.x / 2.x / SDXL from the weight names (first: {sample}); "
        "is this a full Stable Diffusion checkpoint (not a LoRA, VAE or embedding)? If so, set kind"
    )


def kind_of_file(path: Path, allow_pickle: bool = False, where: str = "") -> str:
    where = where or str(path)
    if is_pickle(path):
        return kind_of_keys(load_pickled_state_dict(path, allow_pickle, where), where)
    return kind_of_keys(safetensors_keys(path, where), where)


def safetensors_keys(path: Path, where: str = "") -> list[str]:
    """Tensor names of a safetensors file, reading only its header (clear error when damaged)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise CheckpointError(f"{where or path}: {path} is not a readable .safetensors file ({exc})") from exc


def pickle_reason(exc: BaseException) -> str:
    """The useful line of torch's weights_only refusal ("Unsupported global: ...")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().removeprefix("WeightsUnpickler error: ").strip()
    return text.splitlines()[0].strip() if text.strip() else type(exc).__name__


def load_pickled_state_dict(path: Path, allow_pickle: bool, where: str = "") -> dict:
    """``torch.load(weights_only=True)`` behind the ``--allow-pickle`` gate, errors explained."""
    import pickle

    import torch

    where = where or str(path)
    if not allow_pickle:
        raise PickleRefusedError(pickle_message(path, where))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{where}: {path} holds more than tensors (torch.load(weights_only=True) refused it: "
            f"{pickle_reason(exc)}); it was not loaded. Re-save it as .safetensors from a trusted environment"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"{where}: {path} is not a readable torch file ({exc})") from exc
    while isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: {path} holds a {type(state).__name__}, not a state dict")
    return state
