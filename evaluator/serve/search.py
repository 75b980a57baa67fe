"""Nearest images for the API: by an indexed image's own vector (no torch), a text or an uploaded image.

Reads DIR/index/<model>.faiss (kept in memory; when the file changes, the new one is read
in the background while requests keep using the old one), the store's image rows
(through the request's reader) and, for a text or an image, the open_clip model, loaded
once per worker on the first such query. Writes nothing: unlike `atelier search`, text
embeddings are not added to the workdir's text cache.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from evaluator.serve import deadline
from evaluator.serve.config import ServeConfig
from evaluator.serve.errors import ApiError
from evaluator.serve.jsonio import RawJSON
from evaluator.serve.snapshot import work_slot
from evaluator.workspace import queries
from evaluator.workspace.workdir import Workdir

# How often a search looks whether its index file changed (a rebuild is picked up this late).
STAMP_EVERY = 0.5


@dataclass(frozen=True)
class SearchQuery:
    """One search: exactly one of ``text`` and ``image_id``; filters are optional."""

    text: str | None = None
    image_id: int | None = None
    image: Any = None  # an uploaded image, decoded (PIL, RGB)
    k: int = 10
    checkpoint: str = ""
    artist_id: str = ""


class SearchEngine:
    """The worker's FAISS indexes and (lazily) its CLIP model, shared by all requests."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.wd = Workdir.at(config.workdir, create=False)
        self._lock = threading.Lock()  # guards _indexes and _clip
        self._loading = threading.Lock()  # one index read at a time
        self._indexes: dict[str, tuple[tuple[int, int], Any]] = {}
        self._clip = None
        self._clip_loader: threading.Thread | None = None
        self._clip_ready = threading.Event()
        self._clip_error: str | None = None
        self._stamps: dict[str, tuple[float, tuple[int, int] | None]] = {}  # key -> (checked at, file stamp)

    def model_key(self, store: queries.Reader) -> str:
        """The configured model's key, else the first scored model that has an index."""
        if self.config.model:
            from evaluator.embedding.clip import model_key

            return model_key(self.config.model, self.config.pretrained)
        for key in store.remember("models", lambda: queries.models(store)):
            if self.file_stamp(key) is not None:
                return key
        raise ApiError("no FAISS index in the workdir; run `atelier index build` or `atelier score`",
                       status=503, headers={"Retry-After": "60"})

    def has_index(self) -> bool:
        """Whether an index is in memory already (the first search reads it: seconds at 1M vectors)."""
        with self._lock:
            return bool(self._indexes)

    def index(self, key: str):
        """The index of ``key``: read on first use; a changed file is reread in the background."""
        return self.index_entry(key)[1]

    def index_entry(self, key: str) -> tuple[tuple[int, int], Any]:
        """(the file's (mtime, size) when read, the index) of ``key``."""
        stamp = self.file_stamp(key)
        if stamp is None:
            raise ApiError(f"no FAISS index for model {key!r}; run `atelier index build`", status=503,
                           headers={"Retry-After": "60"})
        with self._lock:
            cached = self._indexes.get(key)
        if cached is not None:
            if cached[0] != stamp and self._loading.acquire(blocking=False):
                threading.Thread(target=self._reload, args=(key, stamp), daemon=True).start()
            return cached
        with self._loading:  # the first request loads it; the others wait for that one
            with self._lock:
                cached = self._indexes.get(key)
            if cached is None:
                cached = self._load(key, stamp)
        return cached

    def file_stamp(self, key: str) -> tuple[int, int] | None:
        """(mtime, size) of ``key``'s index file, None when there is none; looked at every
        ``STAMP_EVERY`` s at most (two stats a search were a twentieth of its time at 1,000/s)."""
        now = time.monotonic()
        checked = self._stamps.get(key)
        if checked is not None and now - checked[0] < STAMP_EVERY:
            return checked[1]
        try:
            stat = self.wd.index(key).stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        self._stamps[key] = (now, stamp)
        return stamp

    def _load(self, key: str, stamp: tuple[int, int]):
        import faiss

        from evaluator.embedding.index import load_index

        # Requests already run in parallel threads: FAISS's OpenMP threads on top of them
        # made a 1M-vector IVF query 2.6x slower on two busy cores (96 vs 37 ms).
        faiss.omp_set_num_threads(1)
        loaded = (stamp, load_index(self.wd, key)[0])
        with self._lock:
            self._indexes[key] = loaded
        return loaded

    def _reload(self, key: str, stamp: tuple[int, int]) -> None:
        try:
            self._load(key, stamp)
        except Exception:  # noqa: BLE001 - a half-written or removed index: keep the old one, retry later
            pass
        finally:
            self._loading.release()

    def clip(self, query_field: str = "text"):
        """The CLIP model, loaded in the background on the first text or image query of this worker.

        A query waits for the load while its deadline allows, then answers 503 with
        Retry-After (the load goes on; torch is imported only then).
        """
        if not self.config.model:
            raise ApiError("text and image search need the server started with --model (and --pretrained)",
                           field="image" if query_field == "image" else "text", status=400)
        with self._lock:
            if self._clip is None and self._clip_loader is None:
                self._clip_loader = threading.Thread(target=self._load_clip, name="atelier-clip", daemon=True)
                self._clip_loader.start()
        watcher = deadline.current()
        self._clip_ready.wait(timeout=max(0.0, watcher.remaining() - 1.0) if watcher else None)
        if self._clip is not None:
            return self._clip
        if self._clip_error is not None:
            raise ApiError(f"the server's CLIP model {self.config.model!r} failed to load: {self._clip_error}",
                           field=query_field, status=503, headers={"Retry-After": "60"})
        raise ApiError("the CLIP model is still loading (the first text or image query of this worker); "
                       "retry shortly", field=query_field, status=503, headers={"Retry-After": "5"})

    def _load_clip(self) -> None:
        from evaluator.embedding.clip import load_clip

        try:
            self._clip = load_clip(self.config.model, self.config.pretrained, self.config.device)
        except Exception as exc:  # noqa: BLE001 - reported to every query that needs the model
            self._clip_error = f"{type(exc).__name__}: {exc}"
        finally:
            self._clip_ready.set()

    def vector(self, index, query: SearchQuery):
        """The query vector: the index's own vector of the image, or the text's or upload's embedding."""
        import numpy as np

        if query.image_id is not None:
            try:
                return np.asarray(index.reconstruct(int(query.image_id)), dtype=np.float32)[None]
            except RuntimeError:
                raise ApiError(f"image_id {query.image_id} is not in the index", field="image_id",
                               status=404) from None
        if query.image is not None:
            return embed_image(self.clip("image"), query.image)
        from evaluator.embedding.text import embed_texts

        return embed_texts(self.clip(), [query.text])

    def search(self, store: queries.Reader, query: SearchQuery) -> tuple[dict[str, Any], bool]:
        """(hits: rank, similarity, image id and its store row; whether they were remembered)."""


        key = self.model_key(store)
        stamp, index = self.index_entry(key)
        if query.image is None:  # the same query on the same copy and index: the same hits
            memo = f"search\0{key}\0{stamp}\0{query.text}\0{query.image_id}\0{query.k}\0" \
                   f"{query.checkpoint}\0{query.artist_id}"
            return store.recall(memo, lambda: self._search(store, query, key, index))
        with work_slot():
            return self._search(store, query, key, index), False

    def _search(self, store: queries.Reader, query: SearchQuery, key: str, index) -> dict[str, Any]:
        import faiss
        import numpy as np

        from evaluator.embedding.index import search_by_vector

        # OpenMP's thread count is per calling thread: set it here, where the search runs (the
        # event loop or a pool thread), not only where the index was read (see ``_load``)
        faiss.omp_set_num_threads(1)

        vec = self.vector(index, query)
        kept = self._filter(store, index, query)
        if kept is None:
            sims, ids = search_by_vector(index, vec, query.k)
        else:  # `kept` holds the selector alive while FAISS uses it
            params, _selector = kept
            sims, ids = index.search(np.ascontiguousarray(vec, dtype=np.float32), query.k, params=params)
        hits = [(float(s), int(i)) for s, i in zip(sims[0], ids[0], strict=True) if i >= 0]
        read_model = store.read_model()
        if read_model is not None and read_model.images is not None:
            return {"model": key, "ntotal": int(index.ntotal), "images": hits_json(hits, read_model.images)}
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



def hits_json(hits: list[tuple[float, int]], images) -> RawJSON:
    """The hits as ``_search`` lists them (rank, similarity, id, the image's row, urls), from the
    read model's encoded rows: no query."""
    import orjson

    parts = []
    for rank, ((sim, image_id), fields) in enumerate(zip(hits, images.fields([i for _, i in hits]), strict=True),
                                                      start=1):
        row = b"," + fields if fields else b""
        parts.append(b'{"rank":%d,"similarity":%s,"image_id":%d%s,"file_url":"/images/%d/file",'
                     b'"thumb_url":"/images/%d/thumb"}' % (rank, orjson.dumps(sim), image_id, row, image_id, image_id))
    return RawJSON(b"[" + b",".join(parts) + b"]")


def embed_image(clip, image):
    """The unit CLIP embedding [1, D] of one decoded image (as `atelier search --image` does)."""
    import torch

    with torch.inference_mode():
        pixels = clip.preprocess(image).unsqueeze(0).to(clip.spec.device, clip.torch_dtype)
        feats = clip.model.encode_image(pixels)
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
