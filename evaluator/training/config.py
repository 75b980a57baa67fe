"""TrainingConfig: every setting of a training run in one dataclass, read from a TOML file.

Reads one TOML file (flat ``key = value`` lines, one per field); writes nothing. Fields
are validated before anything is loaded, and every message names the file and the field
(an unknown field comes with the closest valid name). Relative paths in the TOML are
relative to the TOML file; paths given as command-line overrides, to the current folder.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.errors import InputError
from evaluator.generation.checkpoints.spec import NAME_PATTERN, suggest

METHODS = ("lora", "textual_inversion", "full")
# diffusers.optimization.SchedulerType, spelled out so validation needs no import of diffusers.
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")
# Fields holding paths: resolved against the TOML's folder.
PATH_FIELDS = ("dataset", "labels", "checkpoints", "class_data_dir")


@dataclass
class TrainingConfig:
    """One training run. Comments give the reason for each default."""

    # --- what is trained, on what, from what
    method: str = "lora"  # lora | textual_inversion | full. LoRA: small, fast, what most users share
    base: str = ""  # required: a checkpoint name from `checkpoints`, or a diffusers folder / .safetensors file
    dataset: str = ""  # required: kohya folder (10_name/), flat folder + labels CSV, or a curated export
    output_name: str = ""  # required: names DIR/training/<output_name>/ and the checkpoints <output_name>@step-N
    checkpoints: str | None = None  # the checkpoints TOML `base` is looked up in (not needed for a path base)
    caption_extension: str = ".txt"  # caption file beside each image; kohya's default, so datasets work unchanged
    labels: str | None = None  # labels CSV of a flat folder (file,artist[,caption,repeats]); found as labels.csv

    # --- images and batches
    resolution: int = 512  # training side in px (buckets keep its area): SD 1.x's size; use 1024 for SDXL
    min_bucket_reso: int = 256  # smallest bucket side (kohya's default) ...
    max_bucket_reso: int = 1024  # ... largest bucket side (kohya's default) ...
    bucket_reso_steps: int = 64  # ... bucket sides step by this (64: latents stay a multiple of 8 for every VAE)
    train_batch_size: int = 1  # per process: fits every GPU; raise it, not accumulation, when memory allows
    gradient_accumulation_steps: int = 1  # effective batch = batch x accumulation x processes

    # --- optimisation
    max_train_steps: int = 1000  # optimizer steps; ~1000 at batch 1 is the usual budget for one LoRA style
    learning_rate: float = 1e-4  # diffusers' LoRA example; full fine-tunes want ~1e-6..5e-6, TI ~5e-4
    lr_scheduler: str = "constant"  # constant | constant_with_warmup | linear | cosine | cosine_with_restarts | polynomial; constant is both examples' default
    lr_warmup_steps: int = 0  # none by default, as in the diffusers examples
    max_grad_norm: float = 1.0  # diffusers' examples clip at 1.0; it stops rare spikes from wrecking a LoRA
    adam_weight_decay: float = 1e-2  # diffusers' default for AdamW
    seed: int = 0  # fixes the split, the batch order, the noise and the LoRA initialisation

    # --- LoRA
    rank: int = 4  # LoRA rank (network dim); diffusers' default: a few MB per file, enough for one style
    alpha: float | None = None  # LoRA alpha; unset = rank (scale alpha/rank = 1, as diffusers); kohya users often set 1
    train_text_encoder: bool = False  # UNet only by default: faster, and what most shared LoRAs do

    # --- textual inversion
    placeholder_token: str = ""  # required for textual_inversion, e.g. "<my-style>"
    initializer_token: str = ""  # required for textual_inversion: one existing token the embedding starts from
    num_vectors: int = 1  # diffusers' default; more vectors learn more but need more images

    # --- the objective
    min_snr_gamma: float | None = None  # min-SNR loss weighting; off by default (as both examples); the paper recommends 5
    noise_offset: float = 0.0  # offset noise; off by default; ~0.05 helps very dark or light styles
    caption_dropout_rate: float = 0.0  # share of captions trained as "" (kohya's option): a model trained from scratch needs it for guidance; a base has its own
    prediction_type: str | None = None  # epsilon | v_prediction; unset = the base scheduler's (v for SD 2.x 768)

    # --- prior preservation (full / DreamBooth-style)
    class_data_dir: str | None = None  # images of the class (e.g. "a painting"); off unless given
    class_prompt: str | None = None  # required with class_data_dir: the caption of every class image
    prior_loss_weight: float = 1.0  # DreamBooth's default: the class loss counts as much as the instance loss

    # --- hardware
    device: str = "cpu"  # cpu | cuda | cuda:N | mps; no GPU guessed: the user says where to train
    mixed_precision: str = "no"  # no | bf16 | fp16; fp32 by default (CPU); bf16/fp16 on a GPU halve memory
    gradient_checkpointing: bool = False  # trades ~30% speed for memory; only needed on a small GPU

    # --- saving and validation
    save_every: int = 250  # four saved steps per default run: enough points to choose from
    validation_fraction: float = 0.1  # held out by content hash; at least one image always is
    validation_prompts: list[str] = field(default_factory=list)  # images made at every saved step ([] = none)
    validation_seeds: list[int] = field(default_factory=lambda: [0, 1])  # two seeds: a difference is not one draw
    validation_timesteps: int = 4  # the validation loss is averaged over this many evenly spaced timesteps
    validation_inference_steps: int = 25  # sampler steps of each validation image: SD's usual quality/time point
    validation_guidance: float = 7.5  # classifier-free guidance of validation images: SD's usual
    validation_clip_model: str | None = None  # CLIP of the step metrics; unset = ATELIER_CLIP_MODEL (none: NULL + reason)
    validation_clip_pretrained: str | None = None  # its pretrained tag or weights file; unset = ATELIER_CLIP_PRETRAINED

    def validate(self, where: str = "training config") -> TrainingConfig:
        """Refuse what cannot train, naming the field; return self."""
        for name in ("base", "dataset", "output_name"):
            if not getattr(self, name):
                raise InputError(f"{where}: field {name!r} is required")
        _choice(where, "method", self.method, METHODS)
        _choice(where, "lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _choice(where, "mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.prediction_type is not None:
            _choice(where, "prediction_type", self.prediction_type, PREDICTION_TYPES)
        if not NAME_PATTERN.match(self.output_name) or "@" in self.output_name:
            raise InputError(f"{where}: field 'output_name' {self.output_name!r} must match [A-Za-z0-9._-]+ "
                             "and not start with '.' (it names folders, and checkpoints <output_name>@step-N)")
        for name in ("resolution", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps"):
            value = getattr(self, name)
            if value < 8 or value % 8:
                raise InputError(f"{where}: field {name!r} must be a positive multiple of 8 but is {value}")
        for name in ("resolution", "min_bucket_reso", "max_bucket_reso"):
            if getattr(self, name) % self.bucket_reso_steps:
                raise InputError(f"{where}: field {name!r} ({getattr(self, name)}) must be a multiple of "
                                 f"bucket_reso_steps ({self.bucket_reso_steps})")
        if not self.min_bucket_reso <= self.resolution <= self.max_bucket_reso:
            raise InputError(f"{where}: field 'resolution' ({self.resolution}) must lie within min_bucket_reso "
                             f"({self.min_bucket_reso}) and max_bucket_reso ({self.max_bucket_reso})")
        for name in ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "rank", "save_every",
                     "num_vectors", "validation_timesteps", "validation_inference_steps"):
            _at_least(where, name, getattr(self, name), 1)
        _at_least(where, "lr_warmup_steps", self.lr_warmup_steps, 0)
        for name in ("learning_rate", "max_grad_norm", "prior_loss_weight", "validation_guidance"):
            if not getattr(self, name) > 0:
                raise InputError(f"{where}: field {name!r} must be > 0 but is {getattr(self, name)}")
        for name in ("alpha", "min_snr_gamma"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{where}: field {name!r} must be > 0 (or left out) but is {value}")
        if not self.noise_offset >= 0 or not self.adam_weight_decay >= 0:
            bad = "noise_offset" if not self.noise_offset >= 0 else "adam_weight_decay"
            raise InputError(f"{where}: field {bad!r} must be >= 0 but is {getattr(self, bad)}")
        if not 0 <= self.caption_dropout_rate < 1:
            raise InputError(f"{where}: field 'caption_dropout_rate' must be in [0, 1) but is {self.caption_dropout_rate}")
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"{where}: field 'validation_fraction' must be between 0 and 1 (exclusive) "
                             f"but is {self.validation_fraction}")
        self._validate_method(where)
        return self

    def _validate_method(self, where: str) -> None:
        if self.method == "textual_inversion":
            for name in ("placeholder_token", "initializer_token"):
                value = getattr(self, name)
                if not value or any(c.isspace() for c in value):
                    raise InputError(f"{where}: field {name!r} must be one word for textual_inversion "
                                     f"but is {value!r}")
            if self.placeholder_token == self.initializer_token:
                raise InputError(f"{where}: field 'placeholder_token' must differ from 'initializer_token'")
        if (self.class_data_dir is None) != (self.class_prompt is None):
            missing = "class_prompt" if self.class_prompt is None else "class_data_dir"
            raise InputError(f"{where}: field {missing!r} is required when the other of "
                             "class_data_dir / class_prompt is given (prior preservation)")
        if self.class_data_dir is not None and self.method != "full":
            raise InputError(f"{where}: field 'class_data_dir': prior preservation is for method 'full', "
                             f"not {self.method!r}")
        if self.mixed_precision == "fp16" and not self.device.startswith("cuda"):
            raise InputError(f"{where}: field 'mixed_precision': fp16 needs a CUDA device (device is "
                             f"{self.device!r}); use 'bf16' or 'no'")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else float(self.rank)


def _choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{where}: field {name!r} is {value!r}{suggest(value, choices)}")


def _at_least(where: str, name: str, value: int, low: int) -> None:
    if value < low:
        raise InputError(f"{where}: field {name!r} must be >= {low} but is {value}")


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainingConfig))


def field_types() -> dict[str, Any]:
    """Each field's type (``int``, ``float | None``, ``list[str]`` ...), resolved."""
    return typing.get_type_hints(TrainingConfig)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def coerce(name: str, value: Any, where: str) -> Any:
    """``value`` as field ``name``'s type, or an error naming the field (TOML types are strict)."""
    kind, optional = _base_type(field_types()[name])
    if value is None and optional:
        return None
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise InputError(f"{where}: field {name!r} must be a list of {item.__name__} but is {value!r}")
        return [coerce_scalar(name, v, item, where) for v in value]
    return coerce_scalar(name, value, kind, where)


def coerce_scalar(name: str, value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise InputError(f"{where}: field {name!r} must be {kind.__name__} but is {value!r}")


def from_mapping(data: dict[str, Any], where: str = "training config") -> TrainingConfig:
    """A validated config from a mapping of fields (unknown keys refused with a suggestion)."""
    values = {}
    for key, value in data.items():
        if key not in FIELD_NAMES:
            raise InputError(f"{where}: unknown field {key!r}{suggest(key, FIELD_NAMES)}")
        values[key] = coerce(key, value, where)
    return TrainingConfig(**values).validate(where)


def _resolve(root: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else root / path).resolve()


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Read ``path`` (a TOML of TrainingConfig fields), apply ``overrides``, validate.

    Overrides (the command line's flags) win over the file; their paths are relative to
    the current folder, the file's to the file.
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise InputError(f"training config {file} does not exist")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{file}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not UTF-8 text: {exc}") from exc
    for key, value in data.items():
        if isinstance(value, dict):
            raise InputError(f"{file}: [{key}] tables are not read; write every field as a top-level "
                             f"`key = value` line")
    where = str(file)
    for key in PATH_FIELDS:
        if data.get(key):
            data[key] = str(_resolve(file.parent, str(data[key])))
    base = data.get("base")
    if isinstance(base, str) and base and not Path(base).is_absolute() and (file.parent / base).exists():
        data["base"] = str((file.parent / base).resolve())
    for key, value in (overrides or {}).items():
        if key in PATH_FIELDS and value:
            value = str(_resolve(Path.cwd(), str(value)))
        data[key] = value
    return from_mapping(data, where)


def config_dict(config: TrainingConfig) -> dict[str, Any]:
    """The config as plain data (for run records, ``ss_*`` metadata, ``state/``)."""
    return dataclasses.asdict(config)
