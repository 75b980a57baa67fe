"""What a resumed run needs, saved beside each step's weights in ``step-NNNNNN/state/``.

Writes and reads only that folder:

* ``trainable.safetensors``: the trained parameters by name, in fp32 (the exact values,
  whatever format the weights files are in);
* ``optimizer.pt``, ``lr_scheduler.pt`` (and fp16's ``grad_scaler.pt``): their ``state_dict()``s (tensors, numbers and
  lists only: read back with ``torch.load(weights_only=True)``, which runs no code);
* ``rng.pt``: torch's CPU (and CUDA) generator states;
* ``progress.json``: the step, the micro-batches consumed, Python's and NumPy's RNG
  states, the world size and the config fields a resume must not change.

The training's own draws do not depend on these generators (objective.py seeds one per
image), but a library that draws from the global ones (a dropout) would, so they are
kept as the diffusers examples' ``save_state`` keeps them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import StateError
from evaluator.training.config import TrainingConfig, config_dict

STATE_DIR = "state"
# Fields a resumed run may change: how long it runs, how often it saves, where, and what
# its validation images are. Any other change would make the resumed run a different run.
RESUMABLE_CHANGES = (
    "max_train_steps", "save_every", "device", "gradient_checkpointing", "validation_prompts", "validation_seeds",
    "validation_inference_steps", "validation_guidance", "validation_clip_model", "validation_clip_pretrained",
)


@dataclass
class Progress:
    """Where a run stands after an optimizer step."""

    step: int
    micro_batches: int  # global micro-batches consumed (the data stream's position)
    world_size: int


def save_state(step_dir: Path, models, optimizer, lr_scheduler, progress: Progress, config: TrainingConfig,
               scaler=None) -> Path:
    """Write ``step_dir/state/`` (the folder is renamed whole by the loop: never half-written)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder = step_dir / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: p.detach().float().cpu().contiguous() for name, p in models.trainable.items()},
              str(folder / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), folder / "lr_scheduler.pt")
    if scaler is not None:  # fp16's loss scale, so a resumed run does not re-learn it
        torch.save(scaler.state_dict(), folder / "grad_scaler.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, folder / "rng.pt")
    numpy_state = np.random.get_state()
    data = {
        "step": progress.step, "micro_batches": progress.micro_batches, "world_size": progress.world_size,
        "python_random": _jsonable(random.getstate()),
        "numpy_random": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "config": config_dict(config),
    }
    (folder / "progress.json").write_text(json.dumps(data) + "\n")
    return folder


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple | list) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def check_compatible(saved: dict[str, Any], config: TrainingConfig, where: Path) -> None:
    """Refuse to resume a run whose config differs in anything but ``RESUMABLE_CHANGES``."""
    now = config_dict(config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed[:5])
        raise StateError(f"cannot resume from {where}: the config changed ({details}); only "
                         f"{', '.join(RESUMABLE_CHANGES)} may change on --resume. Train under another "
                         "output_name to start over")


def load_state(step_dir: Path, models, optimizer, lr_scheduler, config: TrainingConfig, scaler=None) -> Progress:
    """Restore parameters, optimizer, scheduler and RNGs from ``step_dir/state/``."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    folder = step_dir / STATE_DIR
    try:
        data = json.loads((folder / "progress.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"cannot resume from {folder}: progress.json unreadable ({exc})") from exc
    check_compatible(data["config"], config, step_dir)
    tensors = load_file(str(folder / "trainable.safetensors"))
    missing = sorted(set(models.trainable) - set(tensors))
    if missing:
        raise StateError(f"cannot resume from {folder}: trainable.safetensors lacks {missing[:3]}")
    with torch.no_grad():
        for name, param in models.trainable.items():
            param.copy_(tensors[name].to(device=param.device, dtype=param.dtype))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", weights_only=True))
    if scaler is not None and (folder / "grad_scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "grad_scaler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate(_tuples(data["python_random"]))
    kind, keys, *rest = data["numpy_random"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    return Progress(int(data["step"]), int(data["micro_batches"]), int(data["world_size"]))


def latest_step_dir(run_dir: Path) -> Path | None:
    """The highest complete ``step-NNNNNN`` folder of a run (temporary folders ignored)."""
    if not run_dir.is_dir():
        return None
    steps = sorted(p for p in run_dir.glob("step-*") if p.is_dir() and p.name[5:].isdigit()
                   and (p / STATE_DIR / "progress.json").is_file())
    return steps[-1] if steps else None
