"""Checkpoints: the TOML file that names them, validation, fingerprints and loading.

A checkpoints file holds ``[[checkpoint]]`` tables::

    [[checkpoint]]
    name = "sd15"                       # used in paths: [A-Za-z0-9._-]+
    source = "runwayml/stable-diffusion-v1-5"   # hub id, diffusers folder, or one file
    kind = "sd1"                        # sd1 | sd2 | sdxl; detected when left out
    dtype = "float16"                   # optional; the run's --dtype wins
    scheduler = "euler"                 # optional; the plan's scheduler wins unless "default"
    notes = "..."

    [[checkpoint]]
    name = "sd15-watercolor"
    base = "sd15"                       # compared against sd15; weights from sd15 ...
    lora = [{ path = "loras/watercolor.safetensors", scale = 0.8 }]
    textual_inversion = [{ path = "ti/wc.safetensors", token = "<wc>" }]

Relative paths are relative to the TOML file. Everything is checked before any model is
loaded, and every message names the file, the checkpoint and the field.

Pickled weights (``.ckpt``, ``.pt``, ``.bin``) can run code when unpickled; they are
only read with ``torch.load(weights_only=True)`` and only when the user passes
``--allow-pickle``. Single files load offline from the architecture configs shipped in
``evaluator/configs/`` and a CLIP tokenizer built from open_clip's BPE vocabulary.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import InputError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
KINDS = ("sd1", "sd2", "sdxl")
# Spellings people use for the same architectures.
KIND_ALIASES = {
    "sd14": "sd1", "sd15": "sd1", "sd1.4": "sd1", "sd1.5": "sd1", "sd-1.5": "sd1", "sd1x": "sd1",
    "sd20": "sd2", "sd21": "sd2", "sd2.0": "sd2", "sd2.1": "sd2", "sd2x": "sd2",
    "xl": "sdxl", "sd-xl": "sdxl", "sdxl1.0": "sdxl",
}
DTYPES = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
CHECKPOINT_FIELDS = ("name", "source", "kind", "base", "lora", "textual_inversion", "dtype", "scheduler", "notes", "config")
LORA_FIELDS = ("path", "scale")
TI_FIELDS = ("path", "token")
MIB = 1 << 20
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# name -> (diffusers class, extra config, the A1111 "Sampler" label written into PNGs).
SCHEDULERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {}, "PLMS"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, "DPM++ 2M"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}, "DPM++ SDE"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
# "default" keeps the checkpoint's own scheduler.
SCHEDULER_NAMES = ("default", *SCHEDULERS)
CLASS_TO_SAMPLER = {cls: label for cls, extra, label in SCHEDULERS.values() if not extra}


class CheckpointError(InputError):
    """A checkpoints file, a checkpoint's weights, or its loading went wrong (message says where)."""


class PickleRefusedError(CheckpointError):
    """A pickled weight file met without ``--allow-pickle``."""


class CheckpointChangedError(CheckpointError):
    """The weights behind a checkpoint name changed since the workdir's images were made."""


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    scale: float = 1.0


@dataclass(frozen=True)
class TextualInversionSpec:
    path: Path
    token: str


@dataclass(frozen=True)
class CheckpointSpec:
    """One validated ``[[checkpoint]]`` table (paths absolute)."""

    name: str
    source: str  # hub id or absolute path
    source_type: str  # hub | folder | file
    kind: str | None
    base: str | None = None
    lora: tuple[LoraSpec, ...] = ()
    textual_inversion: tuple[TextualInversionSpec, ...] = ()
    dtype: str | None = None
    scheduler: str | None = None
    notes: str = ""
    config: Path | None = None  # a diffusers config folder for a single file (else shipped)
    file: Path | None = None  # the TOML it came from

    def where(self, field_name: str | None = None) -> str:
        place = f"{self.file}: checkpoint {self.name!r}"
        return f"{place}, field {field_name!r}" if field_name else place

    def adapters_json(self) -> str:
        return json.dumps(
            {
                "lora": [{"path": str(a.path), "scale": a.scale} for a in self.lora],
                "textual_inversion": [{"path": str(t.path), "token": t.token} for t in self.textual_inversion],
            },
            sort_keys=True,
        )

    def weight_files(self) -> list[Path]:
        """Every local file whose bytes decide this checkpoint's images."""
        files: list[Path] = []
        if self.source_type == "file":
            files.append(Path(self.source))
        elif self.source_type == "folder":
            files.extend(_folder_weight_files(Path(self.source)))
        files.extend(a.path for a in self.lora)
        files.extend(t.path for t in self.textual_inversion)
        return files


# ------------------------------------------------------------------ validation


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(map(str, choices))}"


def _folder_weight_files(folder: Path) -> list[Path]:
    suffixes = SAFE_SUFFIXES + PICKLE_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def load_checkpoints(path: str | Path, allow_pickle: bool = False) -> dict[str, CheckpointSpec]:
    """Read and validate a checkpoints TOML; return specs by name, in file order.

    Raises :class:`CheckpointError` naming the file, the checkpoint and the field of the
    first problem (unknown keys come with the closest valid name).
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise CheckpointError(f"checkpoints file {file} does not exist")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CheckpointError(f"{file}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{file}: not UTF-8 text: {exc}") from exc
    extra = [k for k in data if k != "checkpoint"]
    if extra:
        raise CheckpointError(f"{file}: unknown top-level key {extra[0]!r}{_suggest(extra[0], ['checkpoint'])} (write [[checkpoint]] tables)")
    tables = data.get("checkpoint")
    if not tables:
        raise CheckpointError(f"{file}: no [[checkpoint]] tables")
    if not isinstance(tables, list):
        raise CheckpointError(f"{file}: 'checkpoint' must be an array of tables ([[checkpoint]]), not [checkpoint]")
    raw: dict[str, dict] = {}
    for position, table in enumerate(tables, start=1):
        label = f"{file}: checkpoint #{position}"
        name = table.get("name")
        if name is None:
            raise CheckpointError(f"{label}: field 'name' is missing")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise CheckpointError(f"{label}, field 'name': {name!r} must match [A-Za-z0-9._-]+ (it is used in paths)")
        if name in raw:
            raise CheckpointError(f"{file}: checkpoint {name!r} is defined twice (#{list(raw).index(name) + 1} and #{position})")
        for key in table:
            if key not in CHECKPOINT_FIELDS:
                raise CheckpointError(f"{file}: checkpoint {name!r}: unknown field {key!r}{_suggest(key, CHECKPOINT_FIELDS)}")
        raw[name] = table
    specs: dict[str, CheckpointSpec] = {}
    for name, table in raw.items():
        specs[name] = _validate_table(file, name, table, raw, allow_pickle)
    _check_base_cycles(file, specs)
    return specs


def _validate_table(file: Path, name: str, table: dict, raw: dict, allow_pickle: bool) -> CheckpointSpec:
    def where(field_name: str) -> str:
        return f"{file}: checkpoint {name!r}, field {field_name!r}"

    def text(field_name: str) -> str | None:
        value = table.get(field_name)
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"{where(field_name)}: must be a string but is {value!r}")
        return value

    base = text("base")
    if base is not None and base not in raw:
        raise CheckpointError(f"{where('base')}: no checkpoint named {base!r} in this file{_suggest(base, [n for n in raw if n != name])}")
    if base == name:
        raise CheckpointError(f"{where('base')}: a checkpoint cannot be its own base")
    source = text("source")
    if source is None and base is None:
        raise CheckpointError(f"{where('source')}: missing (give a hub id, a diffusers folder or a .safetensors file; or a 'base')")
    source_type = "inherit"
    if source is not None:
        source, source_type = _resolve_source(file, name, source, allow_pickle)
    kind = text("kind")
    kind = KIND_ALIASES.get(kind.lower(), kind) if kind is not None else None
    if kind is not None and kind not in KINDS:
        raise CheckpointError(f"{where('kind')}: {kind!r} is not a kind{_suggest(kind, KINDS)}")
    dtype = text("dtype")
    if dtype is not None:
        if dtype not in DTYPES:
            raise CheckpointError(f"{where('dtype')}: {dtype!r} is not a dtype{_suggest(dtype, DTYPES)}")
        dtype = DTYPES[dtype]
    scheduler = text("scheduler")
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        raise CheckpointError(f"{where('scheduler')}: unknown scheduler {scheduler!r}{_suggest(scheduler, SCHEDULER_NAMES)}")
    notes = text("notes") or ""
    config = text("config")
    config_path = None
    if config is not None:
        config_path = _local(file, config)
        if not (config_path / "model_index.json").is_file():
            raise CheckpointError(f"{where('config')}: {config_path} is not a diffusers config folder (no model_index.json)")
    lora = tuple(_adapters(file, name, table, "lora", LORA_FIELDS, allow_pickle))
    ti = tuple(_adapters(file, name, table, "textual_inversion", TI_FIELDS, allow_pickle))
    if source is None and base is not None:
        return CheckpointSpec(name, "", "inherit", kind, base, lora, ti, dtype, scheduler, notes, config_path, file)
    return CheckpointSpec(name, source, source_type, kind, base, lora, ti, dtype, scheduler, notes, config_path, file)


def _local(file: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else file.parent / path).resolve()


def _resolve_source(file: Path, name: str, source: str, allow_pickle: bool) -> tuple[str, str]:
    where = f"{file}: checkpoint {name!r}, field 'source'"
    path = _local(file, source)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"{where}: folder {path} is not a diffusers pipeline (no model_index.json)")
        return str(path), "folder"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise CheckpointError(f"{where}: {path} is neither .safetensors nor .ckpt/.pt (got {suffix or 'no suffix'!r})")
        if suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise PickleRefusedError(pickle_message(path, where))
        if path.stat().st_size == 0:
            raise CheckpointError(f"{where}: {path} is empty (0 bytes)")
        return str(path), "file"
    looks_local = source.startswith((".", "/", "~")) or source.endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES) or source.count("/") != 1
    if looks_local or not HUB_ID_PATTERN.match(source):
        raise CheckpointError(f"{where}: {path} does not exist (and {source!r} is not a hub id like 'org/model')")
    return source, "hub"


def pickle_message(path: Path, where: str) -> str:
    return (
        f"{where}: {path} is a pickle ({path.suffix}); unpickling can run arbitrary code. "
        "Convert it to .safetensors, or pass --allow-pickle to read it with "
        "torch.load(weights_only=True), which loads tensors only"
    )


def _adapters(file: Path, name: str, table: dict, key: str, allowed: tuple[str, ...], allow_pickle: bool):
    entries = table.get(key, [])
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise CheckpointError(f"{file}: checkpoint {name!r}, field {key!r}: must be a list of tables like [{{ path = \"...\" }}]")
    for index, entry in enumerate(entries):
        where = f"{file}: checkpoint {name!r}, field '{key}[{index}]'"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: must be a table like {{ path = \"...\" }} but is {entry!r}")
        for field_name in entry:
            if field_name not in allowed:
                raise CheckpointError(f"{where}: unknown field {field_name!r}{_suggest(field_name, allowed)}")
        if not isinstance(entry.get("path"), str):
            raise CheckpointError(f"{where}: field 'path' is missing or not a string")
        path = _local(file, entry["path"])
        if not path.is_file():
            raise CheckpointError(f"{where}.path: {path} does not exist")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{where}.path: {path} is empty (0 bytes)")
        if is_pickle(path) and not allow_pickle:
            raise PickleRefusedError(pickle_message(path, where))
        if key == "lora":
            scale = entry.get("scale", 1.0)
            if isinstance(scale, bool) or not isinstance(scale, int | float) or scale != scale:
                raise CheckpointError(f"{where}.scale: must be a number but is {scale!r}")
            yield LoraSpec(path, float(scale))
        else:
            token = entry.get("token")
            if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
                raise CheckpointError(f"{where}.token: must be one word like '<my-style>' but is {token!r}")
            yield TextualInversionSpec(path, token)


def _check_base_cycles(file: Path, specs: dict[str, CheckpointSpec]) -> None:
    for name in specs:
        seen = [name]
        current = specs[name]
        while current.base is not None:
            if current.base in seen:
                chain = " -> ".join([*seen, current.base])
                raise CheckpointError(f"{file}: checkpoint {name!r}, field 'base': cycle {chain}")
            seen.append(current.base)
            current = specs[current.base]


def resolve_source(spec: CheckpointSpec, specs: dict[str, CheckpointSpec]) -> CheckpointSpec:
    """The spec whose ``source`` holds the weights (itself, or the nearest base with one)."""
    current = spec
    while current.source_type == "inherit":
        current = specs[current.base]
    return current


# ------------------------------------------------------------- kind detection


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
    cached = _hub_cached_file(origin.source, "model_index.json")
    if cached is not None:
        return kind_of_folder(cached.parent)
    raise CheckpointError(
        f"{spec.where('kind')}: cannot detect the kind of hub model {origin.source!r} offline "
        f"(it is not in the local hub cache); set kind = \"sd1\", \"sd2\" or \"sdxl\""
    )


def _hub_cached_file(repo_id: str, filename: str) -> Path | None:
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


def _pickle_reason(exc: BaseException) -> str:
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
            f"{_pickle_reason(exc)}); it was not loaded. Re-save it as .safetensors from a trusted environment"
        ) from exc
    except Exception as exc:
        raise CheckpointError(f"{where}: {path} is not a readable torch file ({exc})") from exc
    while isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: {path} holds a {type(state).__name__}, not a state dict")
    return state


# --------------------------------------------------------------- fingerprints


def _file_digest(path: Path, full: bool) -> dict:
    stat = path.stat()
    digest = hashlib.sha256()
    digest.update(str(stat.st_size).encode())
    with open(path, "rb") as handle:
        if full:
            for block in iter(lambda: handle.read(8 * MIB), b""):
                digest.update(block)
        else:
            digest.update(handle.read(MIB))
            if stat.st_size > MIB:
                handle.seek(max(stat.st_size - MIB, MIB))
                digest.update(handle.read(MIB))
    return {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest.hexdigest()}


def fingerprint(spec: CheckpointSpec, specs: dict[str, CheckpointSpec] | None = None, full: bool = False) -> dict:
    """Fingerprint of the weights a checkpoint uses (its source, or its base's, plus adapters).

    Quick (default): per file, SHA-256 over the size and the first and last MiB: catches
    a replaced, retrained, truncated or re-downloaded file in milliseconds even for 7 GB
    files. ``full=True`` hashes every byte. The result is content-based, so copying the
    files to another machine keeps it; mtimes are recorded beside it (``files``) to say
    which file changed. Returns ``{"fingerprint", "method", "files"}``.
    """
    specs = specs or {spec.name: spec}
    origin = resolve_source(spec, specs)
    files: dict[str, dict] = {}
    roots: list[tuple[str, list[Path]]] = []
    if origin.source_type == "hub":
        cached = _hub_cached_file(origin.source, "model_index.json")
        roots.append(("source", _folder_weight_files(cached.parent) if cached else []))
        if not cached:
            files[f"hub:{origin.source}"] = {"size": None, "mtime": None, "sha256": "uncached"}
    elif origin.source_type == "folder":
        roots.append(("source", _folder_weight_files(Path(origin.source))))
    else:
        roots.append(("source", [Path(origin.source)]))
    roots.append(("lora", [a.path for a in spec.lora]))
    roots.append(("textual_inversion", [t.path for t in spec.textual_inversion]))
    for label, paths in roots:
        for path in paths:
            if label == "source" and origin.source_type == "folder":
                key = f"source/{path.relative_to(origin.source).as_posix()}"
            else:
                key = f"{label}/{path.name}"
            files[key] = _file_digest(path, full)
            files[key]["path"] = str(path)
    scales = [a.scale for a in spec.lora] + [t.token for t in spec.textual_inversion]
    overall = hashlib.sha256(json.dumps(
        {"files": {k: (v["size"], v["sha256"]) for k, v in sorted(files.items())}, "adapters": scales},
        sort_keys=True,
    ).encode())
    method = "full" if full else "quick"
    return {"fingerprint": f"{method}:{overall.hexdigest()[:24]}", "method": method, "files": files}


def model_hash(spec: CheckpointSpec, specs: dict[str, CheckpointSpec] | None = None) -> str:
    """A short hash for the PNG ``Model hash`` field (A1111 shows 10 hex digits)."""
    return fingerprint(spec, specs)["fingerprint"].split(":", 1)[1][:10]


def checkpoint_record(spec: CheckpointSpec, specs: dict[str, CheckpointSpec], fp: dict, kind: str | None) -> dict:
    """The ``checkpoints`` table row (keys = its columns) for ``workdir/checkpoints/<name>.json``."""
    from datetime import UTC, datetime

    origin = resolve_source(spec, specs)
    return {
        "name": spec.name,
        "source": origin.source,
        "kind": kind,
        "base": spec.base,
        "adapters": spec.adapters_json(),
        "fingerprint": fp["fingerprint"],
        "dtype": spec.dtype,
        "scheduler": spec.scheduler,
        "notes": spec.notes,
        "added_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
    }


def changed_files(old: dict, new: dict) -> list[str]:
    """Which files differ between two ``fingerprint()`` results (same method)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None:
            out.append(f"{key} (added)")
        elif b is None:
            out.append(f"{key} (removed)")
        elif (a.get("size"), a.get("sha256")) != (b.get("size"), b.get("sha256")):
            out.append(f"{key} (size {a.get('size')} -> {b.get('size')})" if a.get("size") != b.get("size") else f"{key} (content)")
    return out


# --------------------------------------------------------------------- loading


def torch_dtype(name: str | None, device: str):
    """fp32 on CPU (fp16 matmuls are slow or missing there), fp16 on CUDA, unless named."""
    import torch

    if name is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    key = DTYPES.get(str(name).removeprefix("torch."))
    if key is None:
        raise CheckpointError(f"dtype must be one of {', '.join(sorted(set(DTYPES.values())))} but is {name!r}{_suggest(name, DTYPES)}")
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
        raise CheckpointError(f"kind must be one of {', '.join(KINDS)} but is {kind!r}{_suggest(kind, KINDS)}")
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
        raise CheckpointError(f"unknown scheduler {name!r}{_suggest(name, SCHEDULER_NAMES)}")
    class_name, extra, label = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    return label


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
            f"{_pickle_reason(exc)}); re-save it as .safetensors from a trusted environment"
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
