"""Nearest images for the API: by an indexed image's own vector (no torch) or by a text.

Reads DIR/index/<model>.faiss (kept in memory, reloaded when the file changes), the
store's image rows (through the request's reader) and, for text, the open_clip model,
loaded once per worker on the first text query. Writes nothing: unlike `atelier search`,
text embeddings are not added to the workdir's text cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from evaluator.serve.config import ServeConfig
from evaluator.serve.errors import ApiError
from evaluator.workspace import queries
from evaluator.workspace.workdir import Workdir


@dataclass(frozen=True)
class SearchQuery:
    """One search: exactly one of ``text`` and ``image_id``; filters are optional."""

    text: str | None = None
    image_id: int | None = None
    k: int = 10
    checkpoint: str = ""
    artist_id: str = ""


class SearchEngine:
    """The worker's FAISS indexes and (lazily) its CLIP model, shared by all requests."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.wd = Workdir.at(config.workdir, create=False)
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[tuple[int, int], Any]] = {}
        self._clip = None

    def model_key(self, store: queries.Reader) -> str:
        """The configured model's key, else the first scored model that has an index."""
        if self.config.model:
            from evaluator.embedding.clip import model_key

            return model_key(self.config.model, self.config.pretrained)
        for key in queries.models(store):
            if self.wd.index(key).is_file():
                return key
        raise ApiError("no FAISS index in the workdir; run `atelier index build` or `atelier score`",
                       status=503, headers={"Retry-After": "60"})

    def index(self, key: str):
        """The index of ``key``, read once and again only when its file changes."""
        from evaluator.embedding.index import load_index

        path = self.wd.index(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ApiError(f"no FAISS index for model {key!r}; run `atelier index build`", status=503,
                           headers={"Retry-After": "60"}) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._indexes.get(key)
            if cached is None or cached[0] != stamp:
                cached = (stamp, load_index(self.wd, key)[0])
                self._indexes[key] = cached
        return cached[1]

    def clip(self):
        """The CLIP model, loaded on the first text query of this worker (torch only then)."""
        if not self.config.model:
            raise ApiError("text search needs the server started with --model (and --pretrained)",
                           field="text", status=400)
        with self._lock:
            if self._clip is None:
                from evaluator.embedding.clip import load_clip

                self._clip = load_clip(self.config.model, self.config.pretrained, self.config.device)
        return self._clip

    def vector(self, index, query: SearchQuery):
        """The query vector: the index's own vector of the image, or the text's embedding."""
        import numpy as np

        if query.image_id is not None:
            try:
                return np.asarray(index.reconstruct(int(query.image_id)), dtype=np.float32)[None]
            except RuntimeError:
                raise ApiError(f"image_id {query.image_id} is not in the index", field="image_id",
                               status=404) from None
        from evaluator.embedding.text import embed_texts

        return embed_texts(self.clip(), [query.text])

    def search(self, store: queries.Reader, query: SearchQuery) -> dict[str, Any]:
        """Hits (rank, similarity, image id and its store row) for one query."""
        import numpy as np

        from evaluator.embedding.index import search_by_vector

        key = self.model_key(store)
        index = self.index(key)
        vec = self.vector(index, query)
        kept = self._filter(store, index, query)
        if kept is None:
            sims, ids = search_by_vector(index, vec, query.k)
        else:  # `kept` holds the selector alive while FAISS uses it
            params, _selector = kept
            sims, ids = index.search(np.ascontiguousarray(vec, dtype=np.float32), query.k, params=params)
        hits = [(float(s), int(i)) for s, i in zip(sims[0], ids[0], strict=True) if i >= 0]
        rows = queries.images_by_ids(store, [i for _, i in hits]).set_index("image_id")
        images = []
        for rank, (sim, image_id) in enumerate(hits, start=1):
            row = rows.loc[image_id].to_dict() if image_id in rows.index else {}
            images.append({"rank": rank, "similarity": sim, "image_id": image_id, **row,
                           "file_url": f"/images/{image_id}/file", "thumb_url": f"/images/{image_id}/thumb"})
        return {"model": key, "ntotal": int(index.ntotal), "images": images}

    def _filter(self, store: queries.Reader, index, query: SearchQuery):
        """(FAISS search parameters, their selector) keeping only the filtered images, or None."""
        if not (query.checkpoint or query.artist_id):
            return None
        import faiss
        import numpy as np

        ids = queries.image_ids_of(store, checkpoint=query.checkpoint, artist_id=query.artist_id)
        selector = faiss.IDSelectorBatch(np.asarray(ids, dtype="int64"))
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            ivf = None
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(ivf.nprobe)), selector
        return faiss.SearchParameters(sel=selector), selector

