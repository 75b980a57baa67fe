"""The embedding stage's public names in one place, for callers that import them from here.

Reads and writes nothing itself. The code lives in three modules, split where the
inputs differ:

- :mod:`evaluator.embedding.clip`: loading an open_clip model under a stable model key;
- :mod:`evaluator.embedding.images`: the image encoder over a workdir's images and its
  ``embeddings/<model>/part-*.parquet`` files;
- :mod:`evaluator.embedding.text`: text embeddings, their cache and the artist prompts.

Patch module-level settings (e.g. ``text.MAX_TEXT_PARTS``) in the module that uses them.
"""

from __future__ import annotations

from evaluator.embedding.clip import (
    DTYPES,
    ClipSpec,
    LoadedClip,
    file_fingerprint,
    load_clip,
    model_key,
)
from evaluator.embedding.images import (
    EmbedResult,
    compact_embeddings,
    embed_image_files,
    embed_images,
    embedded_ids,
    embedding_summary,
    load_embeddings,
)
from evaluator.embedding.text import (
    TEXT_CACHE_DIR,
    artist_template_texts,
    embed_texts,
    text_cache_dir,
)

__all__ = [
    "DTYPES",
    "TEXT_CACHE_DIR",
    "ClipSpec",
    "EmbedResult",
    "LoadedClip",
    "artist_template_texts",
    "compact_embeddings",
    "embed_image_files",
    "embed_images",
    "embed_texts",
    "embedded_ids",
    "embedding_summary",
    "file_fingerprint",
    "load_clip",
    "load_embeddings",
    "model_key",
    "text_cache_dir",
]
