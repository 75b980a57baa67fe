"""The models a curation run may use, resolved and checked before any image is read.

A CLIP (``--model``/``--pretrained``) gives embeddings for the near-duplicate cosine, the
outlier score and the aesthetic head; the head (``--aesthetic-head`` or one found in
``$ATELIER_CACHE/aesthetic/``) must match that CLIP; the visible-watermark detector
(``--watermark-model``) is optional. What is missing is said once, in ``notices``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.errors import InputError


@dataclass
class CurationModels:
    clip_key: str | None = None
    clip_spec: Any = None  # evaluator.embedding.clip.ClipSpec, loaded only when needed
    head: Any = None  # aesthetic.AestheticHead
    detector: Any = None  # detector.WatermarkDetector
    notices: list[str] = field(default_factory=list)
    _clip: Any = None

    @property
    def signals_key(self) -> str:
        """What the model signals of a row were computed with: a changed model recomputes them."""
        return json.dumps({
            "embedding": self.clip_key,
            "aesthetic": self.head.spec.name if self.head is not None else None,
            "watermark": self.detector.key if self.detector is not None else None,
        }, sort_keys=True)

    def clip(self):
        from evaluator.embedding.clip import load_clip

        if self._clip is None:
            self._clip = load_clip(self.clip_spec)
        return self._clip


@dataclass(frozen=True)
class ModelOptions:
    clip_model: str | None = None
    clip_pretrained: str | None = None
    aesthetic_head: Path | None = None
    watermark_model: Path | None = None
    device: str = "cpu"
    dtype: str = "float32"


def resolve_models(options: ModelOptions) -> CurationModels:
    """Check every model choice up front; load the small ones (head, detector)."""
    from evaluator.workspace import settings

    models = CurationModels()
    if options.clip_model:
        from evaluator.embedding.clip import ClipSpec, resolve_clip

        spec = ClipSpec(options.clip_model, options.clip_pretrained, options.device, options.dtype)
        spec.validate()
        models.clip_spec, models.clip_key = spec, resolve_clip(spec).key
    elif options.aesthetic_head is not None:
        raise InputError(f"--aesthetic-head {options.aesthetic_head} scores CLIP embeddings: give the CLIP "
                         "it was trained on with --model (and --pretrained)")
    else:
        models.notices.append("no --model: embeddings are not computed, so aesthetic, outlier and the "
                              "embedding side of near_duplicate are NULL (perceptual hashes still find near duplicates)")
    if models.clip_key is not None:
        from evaluator.curation.aesthetic import find_head

        models.head = find_head(models.clip_key, options.aesthetic_head, settings.cache_dir())
        if models.head is None:
            models.notices.append(f"no LAION aesthetic head for {models.clip_key} (give --aesthetic-head, or put "
                                  "LAION's file in $ATELIER_CACHE/aesthetic/): aesthetic is NULL")
    if options.watermark_model is not None:
        from evaluator.curation.detector import load_detector

        models.detector = load_detector(options.watermark_model, options.device)
    else:
        models.notices.append("no --watermark-model: the visible-watermark probability is NULL "
                              "(LAION's detector file watermark_model_v1.pt is needed)")
    return models
