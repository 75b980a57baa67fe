"""LAION's aesthetic predictors over CLIP image embeddings, and which embedding each needs.

v1 (LAION-AI/aesthetic-predictor): one ``nn.Linear(d, 1)`` per OpenAI CLIP model
(ViT-B/32, ViT-B/16, ViT-L/14); v2 (christophschuhmann/improved-aesthetic-predictor): an
MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 on ViT-L/14 (dropout between, no activations). Both
score the L2-normalised image embedding of *that* OpenAI CLIP model on a ~1-10 scale.

A head is only meaningful on its own embedding space, so :func:`check_head_matches`
refuses any other model key: an open_clip architecture with the ``openai`` tag, OpenAI's
own weights file (its SHA-256 is in OpenAI's download URL), or the timm/OpenAI hub copy.
Heads are found by file name: given with ``--aesthetic-head PATH``, or by name in
``$ATELIER_CACHE/aesthetic/``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import InputError


@dataclass(frozen=True)
class HeadSpec:
    name: str  # the registry name (aesthetic_v1_vit_b_32, ...)
    file_name: str  # LAION's file name
    clip_arch: str  # the open_clip architecture of the OpenAI CLIP it reads
    kind: str  # "linear" | "mlp"
    dim: int


HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec("aesthetic_v1_vit_b_32", "sa_0_4_vit_b_32_linear.pth", "ViT-B-32", "linear", 512),
    HeadSpec("aesthetic_v1_vit_b_16", "sa_0_4_vit_b_16_linear.pth", "ViT-B-16", "linear", 512),
    HeadSpec("aesthetic_v1_vit_l_14", "sa_0_4_vit_l_14_linear.pth", "ViT-L-14", "linear", 768),
    HeadSpec("aesthetic_v2_vit_l_14", "sac+logos+ava1-l14-linearMSE.pth", "ViT-L-14", "mlp", 768),
)}

# arch -> (SHA-256 in OpenAI's download URL of the .pt file, the OpenAI weights' hub id)
OPENAI_CLIP: dict[str, tuple[str, str]] = {
    "ViT-B-32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                 "timm/vit_base_patch32_clip_224.openai"),
    "ViT-B-16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                 "timm/vit_base_patch16_clip_224.openai"),
    "ViT-L-14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                 "timm/vit_large_patch14_clip_224.openai"),
}
MLP_LAYERS = (0, 2, 4, 6, 7)  # the Linear layers of v2's nn.Sequential (dropouts between)


def spec_for_file(path: str | Path) -> HeadSpec:
    """The head a file is, by LAION's file name; another name gets the known ones suggested."""
    name = Path(path).name
    for spec in HEADS.values():
        if spec.file_name == name:
            return spec
    names = [s.file_name for s in HEADS.values()]
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
    raise InputError(f"aesthetic head {path}: not a known LAION head file name{hint}")


def openai_arch_of(model_key: str) -> str | None:
    """The architecture whose OpenAI CLIP produced ``model_key``'s embeddings, else None."""
    arch, _, rest = model_key.partition("/")
    arch = arch.removesuffix("-quickgelu")
    for name, (sha, hub_id) in OPENAI_CLIP.items():
        if model_key in (f"hf-hub:{hub_id}", f"hf-hub:{hub_id}/"):
            return name
        if arch != name:
            continue
        if rest == "openai":
            return name
        fingerprint = rest.rpartition("@")[2]
        if len(fingerprint) >= 8 and sha.startswith(fingerprint):
            return name
    return None


def check_head_matches(spec: HeadSpec, model_key: str) -> None:
    """Refuse a head for embeddings of any model but its own OpenAI CLIP."""
    found = openai_arch_of(model_key)
    if found != spec.clip_arch:
        what = f"OpenAI CLIP {found}" if found else "not an OpenAI CLIP model atelier can recognise"
        raise InputError(
            f"aesthetic head {spec.file_name} ({spec.name}) reads L2-normalised embeddings of OpenAI CLIP "
            f"{spec.clip_arch}, but the embedding model is {model_key!r} ({what}): its scores would be meaningless. "
            f"Embed with --model {spec.clip_arch} --pretrained openai (or OpenAI's own {spec.clip_arch}.pt file)"
        )


@dataclass
class AestheticHead:
    spec: HeadSpec
    path: str
    layers: list[tuple[Any, Any]]  # (weight [out, in], bias [out]) float64 numpy

    def score(self, vecs) -> Any:
        """Scores of embeddings [N, d]; each row is L2-normalised first (as LAION's training was)."""
        import numpy as np

        x = np.asarray(vecs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.spec.dim:
            raise InputError(f"{self.spec.name} reads {self.spec.dim}-d embeddings, got shape {x.shape}")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        for weight, bias in self.layers:
            x = x @ weight.T + bias
        return x[:, 0]


def load_head(path: str | Path) -> AestheticHead:
    """A LAION head from its file (name -> spec; shapes checked against the spec)."""
    import torch

    path = Path(path)
    spec = spec_for_file(path)
    if not path.is_file():
        raise InputError(f"aesthetic head {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    prefixes = [""] if spec.kind == "linear" else [f"layers.{i}." for i in MLP_LAYERS]
    try:
        layers = [(state[f"{p}weight"].double().numpy(), state[f"{p}bias"].double().numpy()) for p in prefixes]
    except KeyError as exc:
        raise InputError(f"aesthetic head {path}: missing key {exc} for a {spec.kind} head "
                         f"(keys: {', '.join(list(state)[:8])})") from exc
    if layers[0][0].shape[1] != spec.dim or layers[-1][0].shape[0] != 1:
        raise InputError(f"aesthetic head {path}: weights {layers[0][0].shape} do not map {spec.dim}-d to a score")
    return AestheticHead(spec, str(path), layers)


def find_head(model_key: str, given: str | Path | None, cache: Path | None = None) -> AestheticHead | None:
    """The head to use for ``model_key``: the file given (checked), else one in the cache.

    With no file given and none in the cache for this model, None (the scores are NULL).
    v2 is preferred over v1 for ViT-L/14 (LAION's later, better-correlated head).
    """
    if given is not None:
        head = load_head(given)
        check_head_matches(head.spec, model_key)
        return head
    arch = openai_arch_of(model_key)
    if arch is None or cache is None:
        return None
    for spec in sorted(HEADS.values(), key=lambda s: s.kind != "mlp"):
        candidate = cache / "aesthetic" / spec.file_name
        if spec.clip_arch == arch and candidate.is_file():
            return load_head(candidate)
    return None
