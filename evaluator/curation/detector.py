"""LAION's visible-watermark detector (LAION-5B-WatermarkDetection), loaded from a local file.

The model is timm's ``efficientnet_b3`` (LAION trained the ``efficientnet_b3a`` variant,
which timm now maps to ``efficientnet_b3``) with LAION's classifier head
1536 -> 625 -> ReLU -> Dropout(0.3) -> 256 -> ReLU -> 2. Input: the image squashed to 256x256,
ImageNet mean/std. Output class 0 is "watermark": p(watermark) = softmax(logits)[0].
The weights file (``watermark_model_v1.pt``, a state dict) is given with
``--watermark-model PATH``; nothing is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import InputError

ARCHITECTURE = "efficientnet_b3"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WATERMARK_CLASS = 0


def build_detector(num_features: int = 1536):
    """The detector's architecture with random weights (load a state dict into it)."""
    import timm
    from torch import nn

    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(num_features, 625), nn.ReLU(), nn.Dropout(p=0.3),
        nn.Linear(625, 256), nn.ReLU(), nn.Linear(256, 2),
    )
    return model


@dataclass
class WatermarkDetector:
    model: Any
    path: str
    fingerprint: str
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"laion-watermark@{self.fingerprint[:8]}"

    def probabilities(self, batch) -> Any:
        """p(watermark) for uint8 arrays [N, 256, 256, 3] (RGB)."""
        import numpy as np
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            logits = self.model(((x - mean) / std).to(self.device))
            return torch.softmax(logits.float(), dim=1)[:, WATERMARK_CLASS].cpu().numpy().astype("float64")


def load_detector(path: str | Path, device: str = "cpu") -> WatermarkDetector:
    """The detector from a state-dict file; a file of another shape is refused by name."""
    import torch

    from evaluator.embedding.clip import file_fingerprint

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--watermark-model {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"--watermark-model {path}: not a torch state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = build_detector()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(f"--watermark-model {path}: not LAION's {ARCHITECTURE} watermark detector: "
                         f"{str(exc).splitlines()[0]}") from exc
    model = model.to(device).eval()
    return WatermarkDetector(model, str(path), file_fingerprint(path), device)
