"""Validation figures of a saved step, and the rule that picks the step to keep.

Reads image files and a CLIP model (through ``evaluator.embedding``); writes only its
embedding cache (``DIR/training/<output_name>/clip-<model>.npz``, by content hash). The
held-out validation images of a concept are its references. For the images generated
at a step (``validation_prompts`` x ``validation_seeds``):

* ``reference_similarity``: cos(image, prototype), the prototype being the normalised
  mean embedding of the concept's held-out images (as ``atelier score`` defines it).
* ``retrieval_map@k``: AP@k of each image as a query over a database of the held-out
  images (relevant) and the base checkpoint's images of the same prompts and seeds
  (not relevant): does the step's output find the style ahead of what the base made?
  NULL with a reason when the base's images are missing.
* ``memorization_max`` / ``memorization_mean``: each image's highest cosine to any
  training image (and which file, in ``training_memorization``), max and mean over the
  images. ``memorization_heldout`` beside them is the same figure for the real held-out
  images: how close unseen works of the style naturally come to the training set, so an
  output far above it is a copy rather than the style.
* ``clip_score``: 100 * max(cos(image, its prompt), 0) (CLIPScore) over the prompts;
  write validation prompts that name other subjects ("a lighthouse, in the style of
  X") and it measures whether the fine-tune still follows prompts.

The chosen step (``choose_step``): the step with the highest ``reference_similarity``
among those whose ``memorization_max`` stays under ``MEMORIZATION_THRESHOLD``; steps
without the figures are never chosen, nor step 0 (the base's own figures, recorded for
comparison), and when no step qualifies none is (with the reason). The dashboard's Training page applies the same function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evaluator.embedding.clip import LoadedClip
    from evaluator.training.dataset import TrainingItem

# CLIP cosine above which a generated image counts as a near copy of a training image:
# near-duplicate detection on CLIP ViT embeddings uses ~0.95 (re-encodes and small crops of
# one picture score above it, different works of one artist well below, typically 0.6-0.85).
MEMORIZATION_THRESHOLD = 0.95
RETRIEVAL_K = 10
BASE_LABEL = "__base__"


@dataclass(frozen=True)
class GeneratedImage:
    image_id: int
    path: Path  # absolute
    prompt: str
    concept_id: str


@dataclass
class StepFigures:
    """What ``step_figures`` computed: metric rows and memorization rows (no run/step yet)."""

    metrics: list[dict] = field(default_factory=list)  # model, metric, value, n, reason
    memorization: list[dict] = field(default_factory=list)  # model, image_id, nearest_sha256, nearest_path, similarity

    def add(self, model: str, metric: str, value: float | None, n: int, reason: str | None = None) -> None:
        self.metrics.append({"model": model, "metric": metric, "value": value, "n": n, "reason": reason})


class EmbeddingCache:
    """CLIP embeddings of dataset images by sha256, kept in one .npz per model (atomic writes)."""

    def __init__(self, path: Path, clip: LoadedClip) -> None:
        import numpy as np

        self.path, self.clip = path, clip
        self.vectors: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                self.vectors = dict(zip(data["sha256"].tolist(), data["vectors"], strict=True))

    def embed(self, items: list[TrainingItem]) -> np.ndarray:
        """[len(items), D] float32, embedding only the items not seen before."""
        import numpy as np

        from evaluator.embedding.images import embed_image_files

        missing = list({i.sha256: i for i in items if i.sha256 not in self.vectors}.values())
        for start in range(0, len(missing), 32):
            chunk = missing[start : start + 32]
            vecs = embed_image_files(self.clip, [i.path for i in chunk])
            self.vectors.update({i.sha256: v for i, v in zip(chunk, vecs, strict=True)})
        if missing:
            self._save()
        if not items:
            return np.zeros((0, self.clip.embed_dim), dtype=np.float32)
        return np.stack([self.vectors[i.sha256] for i in items]).astype(np.float32)

    def _save(self) -> None:
        import io

        import numpy as np

        from catalog.atomic import atomic_write_bytes

        buffer = io.BytesIO()
        shas = sorted(self.vectors)
        np.savez(buffer, sha256=np.array(shas), vectors=np.stack([self.vectors[s] for s in shas]))
        atomic_write_bytes(self.path, buffer.getvalue())


def _normalise(vec: np.ndarray) -> np.ndarray:
    import numpy as np

    return vec / max(float(np.linalg.norm(vec)), 1e-12)


def step_figures(
    clip: LoadedClip,
    cache: EmbeddingCache,
    generated: list[GeneratedImage],
    base_images: list[GeneratedImage],
    split: Any,
    text_cache: Path | None = None,
) -> StepFigures:
    """The figures of the module docstring for one step's generated images."""
    import numpy as np

    from evaluator.embedding.images import embed_image_files

    figures = StepFigures()
    key = clip.key
    if not generated:
        for metric in ("reference_similarity", f"retrieval_map@{RETRIEVAL_K}", "memorization_max",
                       "memorization_mean", "clip_score"):
            figures.add(key, metric, None, 0, "no validation image was generated at this step")
        return figures
    gen = embed_image_files(clip, [g.path for g in generated])
    val_items, train_items = list(split.validation), list(split.train)
    val, train = cache.embed(val_items), cache.embed(train_items)
    concepts = np.array([g.concept_id for g in generated], dtype=object)
    val_labels = np.array([i.concept_id for i in val_items], dtype=object)
    _reference_similarity(figures, key, gen, concepts, val, val_labels)
    base = embed_image_files(clip, [b.path for b in base_images]) if base_images else None
    _retrieval(figures, key, gen, concepts, val, val_labels, base)
    _memorization(figures, key, generated, gen, val, train, train_items)
    _clip_score(figures, clip, gen, [g.prompt for g in generated], text_cache)
    return figures


def _reference_similarity(figures, key, gen, concepts, val, val_labels) -> None:
    import numpy as np

    values = np.full(len(gen), np.nan)
    for concept in np.unique(concepts):
        refs = val[val_labels == concept]
        if len(refs):
            rows = concepts == concept
            values[rows] = gen[rows] @ _normalise(refs.mean(axis=0))
    ok = ~np.isnan(values)
    reason = None if ok.any() else "no held-out validation image of the prompts' concepts"
    figures.add(key, "reference_similarity", float(values[ok].mean()) if ok.any() else None, int(ok.sum()), reason)


def _retrieval(figures, key, gen, concepts, val, val_labels, base) -> None:
    import numpy as np

    from evaluator.scoring.metrics import average_precision_at_k

    name = f"retrieval_map@{RETRIEVAL_K}"
    if base is None or not len(base):
        figures.add(key, name, None, 0, "the base checkpoint's validation images are missing (the distractors)")
        return
    db = np.concatenate([val, base])
    labels = np.concatenate([val_labels, np.array([BASE_LABEL] * len(base), dtype=object)])
    ap = average_precision_at_k(gen, concepts, db, labels, RETRIEVAL_K)
    ok = ~np.isnan(ap)
    figures.add(key, name, float(ap[ok].mean()) if ok.any() else None, int(ok.sum()),
                None if ok.any() else "no held-out validation image of the prompts' concepts")


def _memorization(figures, key, generated, gen, val, train, train_items) -> None:
    if not len(train):
        for metric in ("memorization_max", "memorization_mean", "memorization_heldout"):
            figures.add(key, metric, None, 0, "no training image")
        return
    sims = gen @ train.T
    nearest = sims.argmax(axis=1)
    best = sims.max(axis=1)
    for image, index, value in zip(generated, nearest, best, strict=True):
        item = train_items[int(index)]
        figures.memorization.append({"model": key, "image_id": image.image_id, "nearest_sha256": item.sha256,
                                     "nearest_path": str(item.path), "similarity": float(value)})
    figures.add(key, "memorization_max", float(best.max()), len(best))
    figures.add(key, "memorization_mean", float(best.mean()), len(best))
    held = (val @ train.T).max(axis=1) if len(val) else None
    figures.add(key, "memorization_heldout", float(held.mean()) if held is not None else None,
                0 if held is None else len(held), None if held is not None else "no held-out image")


def _clip_score(figures, clip, gen, prompts, text_cache) -> None:
    from evaluator.embedding.text import embed_texts
    from evaluator.scoring.metrics import clip_score_values

    texts = embed_texts(clip, prompts, cache_dir=text_cache)
    values = clip_score_values(gen, texts)
    figures.add(clip.key, "clip_score", float(values.mean()), len(values))


# ------------------------------------------------------------------ the chosen step


@dataclass(frozen=True)
class Choice:
    step: int | None
    reason: str


def choose_step(metrics: pd.DataFrame, threshold: float = MEMORIZATION_THRESHOLD) -> Choice:
    """The step to keep from a frame of (step, metric, value) rows; see the module docstring."""
    import math

    if metrics is None or len(metrics) == 0:
        return Choice(None, "no validation figures recorded yet")
    wide = metrics.pivot_table(index="step", columns="metric", values="value", aggfunc="first")
    if "reference_similarity" not in wide or "memorization_max" not in wide:
        return Choice(None, "reference_similarity or memorization_max was never computed")
    candidates = []
    for step, row in wide[wide.index > 0].iterrows():  # step 0 is the base: shown, never chosen
        similarity, memorization = row.get("reference_similarity"), row.get("memorization_max")
        if similarity is None or memorization is None or math.isnan(similarity) or math.isnan(memorization):
            continue
        if memorization < threshold:
            candidates.append((float(similarity), -int(step), int(step)))
    if not candidates:
        return Choice(None, f"no step has both figures with memorization_max under {threshold:g}")
    similarity, _, step = max(candidates)  # ties: the earlier step (less training, same style)
    return Choice(step, f"highest reference_similarity ({similarity:.4f}) among steps with memorization_max < {threshold:g}")
