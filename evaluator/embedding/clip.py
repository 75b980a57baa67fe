"""Loading open_clip models, each under a stable *model key* (the store's ``model`` column).

Reads a CLIP from one of four sources and writes nothing:

- an open_clip architecture + pretrained tag (fetched from the model hub, so online only),
- an architecture + a local weights file (``--pretrained path``),
- a ``hf-hub:`` id,
- a local folder with ``open_clip_config.json`` and weights (e.g. one made by
  :mod:`evaluator.testing.tiny_clip`), also spelled ``local-dir:<path>``.

The key names the weights (a file's SHA-256 prefix for local files), so changed weights
never mix with embeddings of the old ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.errors import InputError, StateError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "float16", "bfloat16")
LOCAL_DIR_PREFIX = "local-dir:"
# `--pretrained random`: the architecture with seeded random weights, built in memory.
# Its numbers say only that the pipeline runs (structure), nothing about a style.
RANDOM_PRETRAINED = "random"
RANDOM_SEED = 0
RANDOM_NOTE = ("note: {key} has RANDOM weights: its scores are only structural (they test that atelier runs, "
               "not what a model knows about a style); pass real weights for real numbers")
HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load, and where. CPU/float32 by default: exact and runs anywhere."""

    model: str  # architecture name, hf-hub:<id>, local-dir:<path>, or a folder path
    pretrained: str | None = None  # tag (needs network) or a local weights file
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
        if not self.model or not str(self.model).strip():
            raise InputError("model must be a non-empty open_clip name, hf-hub: id or folder")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)} but is {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise InputError(f"device must be cpu, cuda[:N] or mps but is {self.device!r}")


@dataclass
class LoadedClip:
    """A loaded model with its preprocessing, tokenizer and store key."""

    key: str
    spec: ClipSpec
    model: Any
    preprocess: Any
    tokenizer: Any
    embed_dim: int
    fingerprint: str
    info: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.spec.dtype)


# Shrink by an integer factor (a box filter: cheap) while the short side stays at least this
# many times the model's input size, then let open_clip's bicubic resize finish: PIL's own
# ``reducing_gap`` rule, whose docs call gaps >= 2-3 close to a full resample. A 1024px
# SD image reaches 224 from 512 instead of from 1024, about 4x fewer pixels to filter.
REDUCING_GAP = 2


def shrink_for(image: Any, size: int, gap: float = REDUCING_GAP) -> Any:
    """``image`` reduced by the largest integer factor that keeps its short side >= ``gap``
    x ``size`` (itself when there is none)."""
    factor = int(min(image.size) // (size * gap))
    return image.reduce(factor) if factor >= 2 else image


@dataclass(frozen=True)
class ClipPreprocess:
    """open_clip's preprocessing with a cheap shrink first (``shrink_for``).

    Called on a PIL image as open_clip's transform is; ``open`` also decodes a file
    (``decode.open_rgb``: a JPEG in draft mode, its DCT scaled by 1/2, 1/4 or 1/8 while
    decoding to the same bound; a still WebP by libwebp directly, Pillow's pixels faster).
    Every path that embeds a file (the embedder's workers, search by an uploaded file) goes
    through ``open`` so the same file always gives the same pixels. Picklable for workers.
    """

    transform: Any  # open_clip's Compose (resize, crop, to tensor, normalise)
    image_size: int  # the model's square input side

    def __call__(self, image: Any) -> Any:
        return self.transform(shrink_for(image, self.image_size))

    def open(self, path: str | Path) -> Any:
        """The model input tensor of an image file (RGB, shrunk, preprocessed)."""
        from evaluator.embedding.decode import open_rgb

        return self(open_rgb(path, draft_side=int(self.image_size * REDUCING_GAP)))


def _input_size(model: Any) -> int:
    """The model's square input side (open_clip's visual tower says; 224 if it does not)."""
    size = getattr(getattr(model, "visual", None), "image_size", None) or 224
    return int(size[0] if isinstance(size, tuple | list) else size)


@dataclass(frozen=True)
class ResolvedClip:
    """What open_clip is asked to build for a spec, and the key it is stored under."""

    open_clip_name: str
    pretrained: str | None
    key: str
    fingerprint: str
    info: dict


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a weights file: a changed file gives a new model key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _is_local_folder(model: str) -> bool:
    if model.startswith(HF_HUB_PREFIX):
        return False
    return model.startswith(LOCAL_DIR_PREFIX) or Path(model.removeprefix(LOCAL_DIR_PREFIX)).is_dir()


def _resolve_folder(model: str) -> ResolvedClip:
    """A local open_clip folder: its config, its first weights file (safetensors preferred)."""
    from evaluator.testing.tiny_clip import CONFIG_NAME

    folder = Path(model.removeprefix(LOCAL_DIR_PREFIX)).expanduser().resolve()
    config_path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise FileNotFoundError(f"CLIP folder {folder} does not exist")
    if not config_path.is_file():
        raise FileNotFoundError(f"CLIP folder {folder} has no {CONFIG_NAME}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{config_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    weights = sorted(
        [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")],
        key=lambda p: (p.suffix != ".safetensors", p.name),
    )
    if not weights:
        raise FileNotFoundError(f"CLIP folder {folder} has no weights (*.safetensors, *.bin, *.pth)")
    fingerprint = file_fingerprint(weights[0])
    kind = (config.get("atelier") or {}).get("kind")
    stem = kind or folder.name
    info = {"source": str(folder), "weights": str(weights[0]), "random_weights": bool(kind)}
    return ResolvedClip(f"{LOCAL_DIR_PREFIX}{folder}", None, f"{stem}@{fingerprint[:8]}", fingerprint, info)


def _did_you_mean(word: str, choices: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _looks_like_path(model: str) -> bool:
    """A model string meant as a folder: it has a path separator past an architecture's one slash
    (`ViT-B/32` is an architecture), or starts like a path."""
    return model.startswith((".", "~", "/")) or model.count("/") >= 2 or Path(model).parent.is_dir() and "/" in model


def _missing_folder_message(model: str) -> str:
    folder = Path(model).expanduser()
    parent = folder.parent
    siblings = [p.name for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    close = _did_you_mean(folder.name, siblings).replace("did you mean ", f"did you mean {parent}/")
    where = "" if parent.is_dir() else f" (nor does {parent})"
    return (f"CLIP folder {folder} does not exist{where}{close} (nor is it an open_clip architecture "
            "such as ViT-B-32)")


def _resolve_architecture(model: str, pretrained: str | None) -> ResolvedClip:
    """A built-in open_clip architecture with a local weights file or a pretrained tag."""
    import open_clip

    arch = model.replace("/", "-")
    if open_clip.get_model_config(arch) is None:
        if _looks_like_path(model):
            raise InputError(_missing_folder_message(model))
        raise InputError(f"unknown open_clip model {model!r}{_did_you_mean(arch, open_clip.list_models())}")
    if pretrained is None or pretrained == "none":
        raise InputError(
            f"model {model!r} needs --pretrained (a tag such as laion2b_s34b_b79k, or a local weights "
            f"file); for offline checks `--pretrained {RANDOM_PRETRAINED}` (seeded random weights), or build a "
            "folder with `atelier models random`"
        )
    if pretrained == RANDOM_PRETRAINED:
        key = f"{arch}/{RANDOM_PRETRAINED}-seed{RANDOM_SEED}"
        return ResolvedClip(arch, None, key, key, {"source": key, "random_weights": True, "seed": RANDOM_SEED})
    if Path(pretrained).expanduser().is_file():
        weights = Path(pretrained).expanduser().resolve()
        fingerprint = file_fingerprint(weights)
        key = f"{arch}/{weights.stem}@{fingerprint[:8]}"
        return ResolvedClip(arch, str(weights), key, fingerprint, {"source": str(weights)})
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        hint = _did_you_mean(pretrained, tags) or f"; known tags: {', '.join(tags) or 'none'}"
        raise InputError(f"{pretrained!r} is neither a weights file nor a pretrained tag of {arch}{hint}")
    key = f"{arch}/{pretrained}"
    return ResolvedClip(arch, pretrained, key, key, {"source": key})


def resolve_clip(spec: ClipSpec) -> ResolvedClip:
    """Where a spec's weights come from and its model key, without loading them."""
    if _is_local_folder(spec.model):
        return _resolve_folder(spec.model)
    if spec.model.startswith(HF_HUB_PREFIX):
        return ResolvedClip(spec.model, None, spec.model, spec.model, {"source": spec.model})
    return _resolve_architecture(spec.model, spec.pretrained)


def model_key(model: str, pretrained: str | None = None) -> str:
    """The store's ``model`` string for a spec, without loading weights."""
    return resolve_clip(ClipSpec(model, pretrained)).key


@contextmanager
def _quiet_logging(active: bool) -> Iterator[None]:
    """Mute log records while a hub load runs: its failure becomes our own one-line error."""
    import logging

    if not active:
        yield
        return
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@lru_cache(maxsize=4)
def _load_cached(spec: ClipSpec) -> LoadedClip:
    import open_clip
    import torch

    from evaluator.workspace.hub import hub_offline

    resolved = resolve_clip(spec)
    name, pretrained = resolved.open_clip_name, resolved.pretrained
    if resolved.info.get("random_weights") and "seed" in resolved.info:
        import sys

        torch.manual_seed(resolved.info["seed"])  # the same weights, hence the same key, every time
        print(RANDOM_NOTE.format(key=resolved.key), file=sys.stderr)
    from_hub = bool(pretrained) and not Path(pretrained).is_file() or name.startswith(HF_HUB_PREFIX)
    offline = from_hub and hub_offline()
    try:
        with _quiet_logging(from_hub):  # open_clip logs its own download failure to the root logger
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=spec.device
            )
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if from_hub:
            why = ("the model hub is unreachable and they are not in the local cache" if offline
                   else f"the model hub refused or failed: {str(exc).splitlines()[0]}")
            raise StateError(
                f"cannot load weights for {name}{'/' + pretrained if pretrained else ''}: {why}. "
                "Pass a local weights file with --pretrained PATH, or a local model folder as --model"
            ) from exc
        raise
    model = model.to(device=spec.device, dtype=getattr(torch, spec.dtype)).eval()
    preprocess = ClipPreprocess(preprocess, _input_size(model))
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else None
    if embed_dim is None:
        with torch.no_grad():
            embed_dim = int(model.encode_text(tokenizer(["x"]).to(spec.device)).shape[-1])
    return LoadedClip(resolved.key, spec, model, preprocess, tokenizer, embed_dim, resolved.fingerprint, resolved.info)


def load_clip(
    model: str | ClipSpec | LoadedClip,
    pretrained: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> LoadedClip:
    """Load (once per process) an open_clip model; see the module docstring for sources."""
    if isinstance(model, LoadedClip):
        return model
    spec = model if isinstance(model, ClipSpec) else ClipSpec(str(model), pretrained, device, dtype)
    spec.validate()
    if spec.model.startswith(LOCAL_DIR_PREFIX) or Path(spec.model).expanduser().is_dir():
        local = spec.model.removeprefix(LOCAL_DIR_PREFIX)
        spec = ClipSpec(str(Path(local).expanduser().resolve()), None, spec.device, spec.dtype)
    return _load_cached(spec)
