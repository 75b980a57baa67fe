"""The checkpoints TOML: its ``[[checkpoint]]`` tables read and validated into specs.

Reads one TOML file (and stats the files it names, without opening any weights);
writes nothing. Also holds what the other checkpoint modules share: the specs, the
errors, the kinds, dtypes and scheduler names a table may use.

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
loaded, and every message names the file, the checkpoint and the field. Pickled
weights (``.ckpt``, ``.pt``, ``.bin``) can run code when unpickled, so they are refused
here unless the user passes ``--allow-pickle``.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import InputError

# A path component: [A-Za-z0-9._-]+, never ".", ".." or any name starting with "." (hidden,
# or a step out of its folder). A training step's checkpoint adds "@step-" and six digits
# (``<output_name>@step-000100``, recorded by ``atelier train``).
NAME_PATTERN = re.compile(r"^(?!\.)[A-Za-z0-9._-]+(@step-[0-9]{6})?$")
# The checkpoints a workdir records itself (each saved training step), merged with the
# user's file by ``with_workdir_checkpoints``.
WORKDIR_CHECKPOINTS = Path("training") / "checkpoints.toml"
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
            files.extend(folder_weight_files(Path(self.source)))
        files.extend(a.path for a in self.lora)
        files.extend(t.path for t in self.textual_inversion)
        return files


def suggest(word: str, choices) -> str:
    """The tail of an error message: the closest valid choice, else all of them."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(map(str, choices))}"


def folder_weight_files(folder: Path) -> list[Path]:
    """Every weight file under a diffusers folder (safe and pickled), sorted."""
    suffixes = SAFE_SUFFIXES + PICKLE_SUFFIXES
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes)


def is_pickle(path: Path) -> bool:
    """A suffix whose files are read with ``torch.load`` (can run code when unpickled)."""
    return path.suffix.lower() in PICKLE_SUFFIXES


def load_checkpoints(path: str | Path, allow_pickle: bool = False) -> dict[str, CheckpointSpec]:
    """Read and validate a checkpoints TOML; return specs by name, in file order.

    Raises :class:`CheckpointError` naming the file, the checkpoint and the field of every
    problem, one per line (unknown keys come with the closest valid name).
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
        raise CheckpointError(f"{file}: unknown top-level key {extra[0]!r}{suggest(extra[0], ['checkpoint'])} (write [[checkpoint]] tables)")
    tables = data.get("checkpoint")
    if not tables:
        raise CheckpointError(f"{file}: no [[checkpoint]] tables")
    if not isinstance(tables, list):
        raise CheckpointError(f"{file}: 'checkpoint' must be an array of tables ([[checkpoint]]), not [checkpoint]")
    raw: dict[str, dict] = {}
    problems: list[CheckpointError] = []  # every table is checked: one run shows every mistake
    for position, table in enumerate(tables, start=1):
        try:
            name = _checked_name(file, position, table, raw)
        except CheckpointError as exc:
            problems.append(exc)
            continue
        raw[name] = table
    specs: dict[str, CheckpointSpec] = {}
    for name, table in raw.items():
        try:
            specs[name] = _validate_table(file, name, table, raw, allow_pickle)
        except CheckpointError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise CheckpointError(f"{len(problems)} problems in {file}:\n  " + "\n  ".join(map(str, problems)))
    _check_base_cycles(file, specs)
    return specs


def _checked_name(file: Path, position: int, table: dict, raw: dict) -> str:
    """The table's name, after checking it and the table's keys (first problem raised)."""
    label = f"{file}: checkpoint #{position}"
    name = table.get("name")
    if name is None:
        raise CheckpointError(f"{label}: field 'name' is missing")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CheckpointError(f"{label}, field 'name': {name!r} must match [A-Za-z0-9._-]+ and not start "
                              "with '.' (it is used in paths; a training step may end in @step-NNNNNN)")
    if name in raw:
        raise CheckpointError(f"{file}: checkpoint {name!r} is defined twice (#{list(raw).index(name) + 1} and #{position})")
    for key in table:
        if key not in CHECKPOINT_FIELDS:
            raise CheckpointError(f"{file}: checkpoint {name!r}: unknown field {key!r}{suggest(key, CHECKPOINT_FIELDS)}")
    return name


def with_workdir_checkpoints(
    specs: dict[str, CheckpointSpec], workdir: str | Path, allow_pickle: bool = False
) -> dict[str, CheckpointSpec]:
    """``specs`` plus the checkpoints the workdir recorded itself (``DIR/training/checkpoints.toml``:
    every saved training step, with a copy of its base), so ``generate`` takes
    ``<output_name>@step-NNNNNN`` beside the user's file. The user's file wins a shared name."""
    file = (Path(workdir).expanduser() / WORKDIR_CHECKPOINTS).resolve()
    if not file.is_file() or any(spec.file == file for spec in specs.values()):
        return specs
    merged = dict(specs)
    for name, spec in load_checkpoints(file, allow_pickle=allow_pickle).items():
        merged.setdefault(name, spec)
    return merged


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
        raise CheckpointError(f"{where('base')}: no checkpoint named {base!r} in this file{suggest(base, [n for n in raw if n != name])}")
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
        raise CheckpointError(f"{where('kind')}: {kind!r} is not a kind{suggest(kind, KINDS)}")
    dtype = text("dtype")
    if dtype is not None:
        if dtype not in DTYPES:
            raise CheckpointError(f"{where('dtype')}: {dtype!r} is not a dtype{suggest(dtype, DTYPES)}")
        dtype = DTYPES[dtype]
    scheduler = text("scheduler")
    if scheduler is not None and scheduler not in SCHEDULER_NAMES:
        raise CheckpointError(f"{where('scheduler')}: unknown scheduler {scheduler!r}{suggest(scheduler, SCHEDULER_NAMES)}")
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
                raise CheckpointError(f"{where}: unknown field {field_name!r}{suggest(field_name, allowed)}")
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
