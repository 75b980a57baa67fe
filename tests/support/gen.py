"""Helpers shared by the generation/checkpoint/import tests: tiny models built once per session.

Builders write into a session temp folder and cache by (kind, what), so each tiny
pipeline, LoRA and fine-tune is built once however many test files ask for it.
"""

from __future__ import annotations

from pathlib import Path

from catalog.units import WorkUnit

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus"
SHARED_DATA = REPO.parent / "shared" / "data"

_cache: dict[tuple, Path] = {}


def models_root(tmp_path_factory) -> Path:
    key = ("root",)
    if key not in _cache:
        _cache[key] = tmp_path_factory.mktemp("tiny-models")
    return _cache[key]


def tiny_pipeline(tmp_path_factory, kind: str = "sd1") -> Path:
    from evaluator.testing.tiny import build_tiny_pipeline

    key = ("pipe", kind)
    if key not in _cache:
        _cache[key] = build_tiny_pipeline(models_root(tmp_path_factory) / f"tiny-{kind}", kind=kind, seed=0)
    return _cache[key]


def tiny_lora(tmp_path_factory, kind: str = "sd1") -> Path:
    from evaluator.testing.tiny import build_tiny_lora

    key = ("lora", kind)
    if key not in _cache:
        _cache[key] = build_tiny_lora(tiny_pipeline(tmp_path_factory, kind), models_root(tmp_path_factory) / f"lora-{kind}.safetensors")
    return _cache[key]


def tiny_finetune(tmp_path_factory, kind: str = "sd1") -> Path:
    from evaluator.testing.tiny import build_finetune

    key = ("ft", kind)
    if key not in _cache:
        _cache[key] = build_finetune(tiny_pipeline(tmp_path_factory, kind), models_root(tmp_path_factory) / f"ft-{kind}", noise=0.2)
    return _cache[key]


def tiny_single_file(tmp_path_factory, kind: str = "sd1") -> Path:
    from evaluator.testing.tiny import save_single_file

    key = ("single", kind)
    if key not in _cache:
        _cache[key] = save_single_file(tiny_pipeline(tmp_path_factory, kind), models_root(tmp_path_factory) / f"tiny-{kind}.safetensors")
    return _cache[key]


def units_for(checkpoints, artists=("monet", "hokusai"), seeds=(0, 1), size=64, steps=3, guidance=5.0,
              scheduler="default", template="style", negative="") -> list[WorkUnit]:
    return [
        WorkUnit(c, a, template, f"a painting in the style of {a}", negative, s, size, size, steps, guidance, scheduler)
        for c in checkpoints for a in artists for s in seeds
    ]


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
