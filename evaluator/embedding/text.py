"""Text embeddings with an on-disk cache keyed by (model, exact text), and the artist prompts.

Reads and writes ``<cache>/<model>/texts-*.parquet`` under the cross-workdir cache
(``ATELIER_TEXT_CACHE``), or ``embeddings/<model>/_texts/`` of a workdir (``text`` string and a
float32 ``embedding``; float32 so cached and fresh values are identical). The artist ×
template matrix (9,000 × 5 texts) is encoded once per model; past ``MAX_TEXT_PARTS``
part files the cache is merged into one, so a read stays one file or a few.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from evaluator.embedding.clip import LoadedClip
    from evaluator.workspace.workdir import Workdir

TEXT_CACHE_DIR = "_texts"
# Text cache part files before they are merged into one: reads stay one file or a few.
MAX_TEXT_PARTS = 16


def text_cache_dir(workdir: Workdir, model: str) -> Path:
    """Where ``model``'s text embeddings are cached: the cross-workdir cache
    (``settings.text_cache_root``, keyed by model like the workdir's folders) or, with
    ``ATELIER_TEXT_CACHE=workdir``, ``embeddings/<model>/_texts`` of the workdir."""
    from evaluator.workspace.settings import text_cache_root
    from evaluator.workspace.workdir import model_slug

    root = text_cache_root()
    return workdir.embeddings(model) / TEXT_CACHE_DIR if root is None else root / model_slug(model)


def _text_cache_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("texts-*.parquet") if not p.name.startswith("."))


def _read_text_cache(folder: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    cache: dict[str, np.ndarray] = {}
    for path in _text_cache_paths(folder):
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # merged away by a concurrent compaction: its rows live on
            continue
        col = table.column("embedding").combine_chunks()
        vecs = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
        for text, vec in zip(table.column("text").to_pylist(), vecs, strict=True):
            cache[text] = vec
    return cache


def _write_text_part(path: Path, texts: list[str], vecs: np.ndarray) -> None:
    """One cache file of (text, float32 vector) rows, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    flat = pa.array(vecs.reshape(-1), type=pa.float32())
    table = pa.table({
        "text": pa.array(texts, type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1]),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _text_part_name(suffix: str = "") -> str:
    return f"texts-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}{suffix}.parquet"


def _encode_texts(clip: LoadedClip, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    """L2-normalised float32 text embeddings of ``texts`` (no cache)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    new_vecs = []
    with torch.inference_mode():
        starts = range(0, len(texts), batch_size)
        for s in tqdm(starts, desc="embed texts", disable=not progress or len(texts) < 1000):
            tokens = clip.tokenizer(texts[s : s + batch_size]).to(clip.spec.device)
            feats = clip.model.encode_text(tokens)
            new_vecs.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
    return np.concatenate(new_vecs).astype(np.float32)


def embed_texts(
    clip: LoadedClip,
    texts: list[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised text embeddings, float32 [len(texts), D], in the order given.

    With ``cache_dir`` (``embeddings/<model>/_texts`` of a workdir), texts seen before are
    read back instead of encoded: keyed by (model folder, exact text). Stored as float32,
    so cached and fresh values are identical.
    """
    import numpy as np

    texts = [str(t) for t in texts]
    folder = Path(cache_dir) if cache_dir is not None else None
    cache = _read_text_cache(folder) if folder is not None else {}
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if missing:
        fresh = _encode_texts(clip, missing, batch_size, progress)
        cache.update(zip(missing, fresh, strict=True))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            _write_text_part(folder / _text_part_name(), missing, fresh)
            if len(_text_cache_paths(folder)) > MAX_TEXT_PARTS:
                _compact_text_cache(folder, cache)
    if not texts:
        return np.zeros((0, clip.embed_dim), dtype=np.float32)
    return np.stack([cache[t] for t in texts]).astype(np.float32)


def _compact_text_cache(folder: Path, cache: dict[str, np.ndarray]) -> None:
    """Merge the cache's part files into one (written first, then the old ones removed)."""
    import numpy as np

    old = _text_cache_paths(folder)
    texts = sorted(cache)
    vecs = np.stack([cache[t] for t in texts]).astype(np.float32)
    _write_text_part(folder / _text_part_name("-merged"), texts, vecs)
    for path in old:
        path.unlink(missing_ok=True)


def artist_template_texts(
    clip: LoadedClip, names: list[str], templates: dict[str, str], cache_dir: str | Path | None = None
) -> tuple[list[str], np.ndarray]:
    """The artist x template text matrix: (template names, vectors [A, T, D]).

    ``templates`` maps a name to its text with ``{name}``; a template without it (the
    null baseline) gives the same vector for every artist. Cached like embed_texts, so
    9,000 artists x 5 templates are encoded once per model.
    """
    order = sorted(templates)
    texts = [templates[t].replace("{name}", n) for n in names for t in order]
    vecs = embed_texts(clip, texts, cache_dir=cache_dir, progress=True)
    return order, vecs.reshape(len(names), len(order), -1)
