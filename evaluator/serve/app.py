"""The FastAPI application of `atelier serve`: ``create_app(config)``, and ``app_from_env`` for workers.

Reads DIR/atelier.duckdb through the server's snapshot of it (``serve.snapshot``; or a
read-only connection per request with ``snapshot=False``) with the SQL the dashboard runs
too (``evaluator.workspace.queries``), the FAISS index and the image files inside DIR
(``Workdir.resolve_inside``: a stored path escaping DIR is refused). Writes only its
snapshot folder. Every error is JSON ``{"error", "field", "suggestions"}``; before any
route, ``guard.Guard`` checks the token, the body size and the client's rate, and
``deadline.Deadline`` the request's time.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from catalog.schema import KINDS
from evaluator.errors import InputError
from evaluator.serve import deadline, readmodel
from evaluator.serve.config import ServeConfig
from evaluator.serve.errors import ApiError, check_name, pick_name, suggest
from evaluator.serve.guard import Guard, RateLimiter
from evaluator.serve.jsonio import ApiJSON, RawJSON, records, records_json
from evaluator.serve.reader import DirectReader, PinnedReader, SnapshotReader, busy
from evaluator.serve.search import SearchEngine, SearchQuery
from evaluator.serve.snapshot import StoreSnapshots, inline_work
from evaluator.serve.upload import UploadLimits, decode_upload
from evaluator.workspace import queries
from evaluator.workspace.store import StoreLockedError
from evaluator.workspace.workdir import Workdir


class SqlBody(BaseModel):
    query: str = Field(description="One read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).")
    format: Literal["json", "csv"] = "json"
    row_limit: int | None = Field(None, ge=1, le=queries.SQL_ROW_LIMIT)


class SearchBody(BaseModel):
    text: str | None = Field(None, description="A text, embedded by the server's CLIP model (--model).")
    image_id: int | None = Field(None, description="An indexed image: its stored vector is the query (no model needed).")
    k: int = Field(10, ge=1)
    checkpoint: str | None = None
    artist_id: str | None = None


class State:
    """What the routes share: the config, the workdir, the snapshots, the search engine."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.wd = Workdir.at(config.workdir, create=False)
        self.search = SearchEngine(config)
        self.uploads = UploadLimits(config.max_upload_bytes, config.max_upload_pixels)
        self.own_snapshot_dir: Path | None = None
        self.snapshots: StoreSnapshots | None = None
        if config.snapshot:
            folder = config.snapshot_dir
            if folder is None:
                folder = self.own_snapshot_dir = Path(tempfile.mkdtemp(prefix="atelier-serve-"))
            self.snapshots = StoreSnapshots(self.wd.store, folder, config.lock_wait,
                                            prepare=build_read_model if config.read_model else None)

    def reader(self) -> SnapshotReader | DirectReader:
        if self.snapshots is not None:
            return SnapshotReader(self.snapshots)
        return DirectReader(self.wd.store, self.config.lock_wait)

    def limit(self, limit: int | None, offset: int) -> tuple[int, int]:
        """The page asked for, within 1..max_limit and offset >= 0, else a 400 naming it."""
        limit = self.config.default_limit if limit is None else limit
        if not 1 <= limit <= self.config.max_limit:
            raise ApiError(f"limit must be within 1..{self.config.max_limit} but is {limit}", field="limit")
        if offset < 0:
            raise ApiError(f"offset must be >= 0 but is {offset}", field="offset")
        return limit, offset

    def close(self) -> None:
        if self.snapshots is not None:
            self.snapshots.close()
        if self.own_snapshot_dir is not None:
            shutil.rmtree(self.own_snapshot_dir, ignore_errors=True)


def build_read_model(snapshot, previous):
    """The read model of one snapshot (``serve.readmodel``), taking over ``previous``' unchanged parts."""
    with PinnedReader(snapshot) as store:
        model = readmodel.build(store, previous)
        warm_lookups(store)
        model.lookups = store.lookups
    settle_heap(collect_first=previous is None)
    return model


def settle_heap(collect_first: bool) -> None:
    """Move every object alive now (the imports, this read model) out of the cyclic GC's reach.

    A full collection walks every tracked object with the GIL held: ~70-100 ms here with
    FastAPI, pandas and DuckDB imported, a stall of every request in flight, a few times in
    ten seconds under load (the p99). Frozen objects are still freed by reference counting
    when a later snapshot drops them; only a reference cycle among them stays, and a read
    model's rows (arrays, bytes) form none. ``collect_first`` (the first snapshot, before the
    load) clears the start's garbage cycles first, so that they are not kept.
    """
    import gc

    if collect_first:
        gc.collect()
    gc.freeze()


def warm_lookups(store: PinnedReader) -> None:
    """Compute what requests look up by ``store.remember`` (names, the comparison tree, each
    group's summary, counts) with the functions the routes use: a request then runs no query."""
    for what in ("models", "checkpoints", "metrics", "artists"):
        names(store, what)
    artist_set(store)
    store.remember("overview", lambda: queries.overview(store))
    tree = store.remember("comparison_tree", lambda: comparison_tree(queries.comparison_pairs(store)))
    for finetune, bases in tree.items():
        for base, models in bases.items():
            for model, metrics in models.items():
                for metric in metrics:
                    comparison_summary(store, base, finetune, model, metric)


def artist_set(store) -> frozenset[str]:
    return store.remember("artist_set", lambda: frozenset(names(store, "artists")))


def comparison_summary(store, base: str, finetune: str, model: str, metric: str) -> dict:
    return store.remember(f"summary\0{base}\0{finetune}\0{model}\0{metric}",
                          lambda: queries.comparison_summary(store, base, finetune, model, metric))


def page_json(items: bytes, more: bool, limit: int, offset: int, **extra) -> ApiJSON:
    """What ``page`` answers, from rows a read model encoded already."""
    return ApiJSON({**extra, "items": RawJSON(items), "limit": limit, "offset": offset,
                    "next_offset": offset + limit if more else None})


def page(frame, limit: int, offset: int, **extra) -> ApiJSON:
    """One page of rows; ``frame`` holds up to ``limit + 1`` rows, the extra one saying "more"."""
    more = len(frame) > limit
    return ApiJSON({**extra, "items": records_json(frame.head(limit)), "limit": limit, "offset": offset,
                    "next_offset": offset + limit if more else None})


def sliced(frame, limit: int, offset: int, **extra) -> ApiJSON:
    """A page of a small, fully read table."""
    return page(frame.iloc[offset:offset + limit + 1], limit, offset, **extra)


def answer(state: State, request: Request, build: Callable[..., ApiJSON]) -> Response:
    """``build(store)``'s page, computed once per snapshot (a copy never changes); header X-Cache hit | miss.

    Only a success is remembered: an error raised by ``build`` is raised again next time.
    """
    key = page_key(request.scope)
    with state.reader() as store:
        body, hit = store.recall(key, lambda: build(store).body)
    return Response(body, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"})


def page_key(scope: dict) -> str:
    """The memo key of a GET page: its path and its sorted query parameters (as Starlette parses them)."""
    from urllib.parse import parse_qsl

    items = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return "page\0" + scope["path"] + "?" + urlencode(sorted(items))


class RememberedPages:
    """ASGI: a GET page the current snapshot remembers is sent from here, before FastAPI's routing
    and parameter checks (half the CPU of a remembered answer): the same bytes, checked when
    they were first computed (only successes are remembered). Token and rate limit still apply
    (``Guard`` is outside this)."""

    def __init__(self, app: Callable, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        snapshots = self.state.snapshots
        if scope["type"] == "http" and scope["method"] == "GET" and snapshots is not None and snapshots.ready():
            body = snapshots.remembered(page_key(scope))
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"x-cache", b"hit")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def answer_soon(state: State, request: Request, build: Callable[..., ApiJSON], inline: bool = True) -> Response:
    """``answer``: on the event loop when the snapshot's read model is ready (a lookup and a slice:
    a thread hop would cost more, and 50 threads fighting for the GIL starve the loop), else in a thread."""
    if inline and state.snapshots is not None and state.snapshots.ready():
        with inline_work():
            return answer(state, request, build)
    return await run_in_threadpool(answer, state, request, build)


def names(store, what: str) -> list[str]:
    """Model, checkpoint, metric or artist names of the store (once per snapshot)."""
    lookups = {"models": queries.models, "checkpoints": queries.checkpoint_names,
               "metrics": queries.metric_names, "artists": queries.artist_ids}
    return store.remember(what, lambda: lookups[what](store))


def _artist(store, field: str, artist_id: str) -> str:
    if artist_id in artist_set(store):
        return artist_id
    return check_name(field, artist_id, names(store, "artists"), "artist")


def _check_kind(store, kind: str) -> None:
    """A kind the catalog knows, in a store that has the ``artists.kind`` column, else a 400 naming ``kind``."""
    from evaluator.workspace.store import schema_version

    columns = store.remember("artist_columns", lambda: queries.table_columns(store, "artists"))
    if "kind" not in columns:
        version = schema_version(store.connection())
        raise ApiError(f"kind: this store has no artist kinds yet (its schema is version {version}; kinds "
                       "came with migration 7): run `atelier migrate --workdir DIR`, or leave kind out", field="kind")
    check_name("kind", kind, list(KINDS), "kind")


def _model(store, model: str | None) -> str:
    """The model asked for (checked), else the most used one."""
    known = names(store, "models")
    if model:
        return check_name("model", model, known, "model")
    if not known:
        raise ApiError("nothing is scored yet; run `atelier score`", field="model", status=404)
    return known[0]


def table_routes(state: State) -> APIRouter:
    """/health, /checkpoints, /artists, /scores, /leaderboard."""
    router = APIRouter()

    @router.get("/health", summary="Store schema version, models, counts.")
    def health() -> ApiJSON:
        from evaluator.workspace.store import SCHEMA_VERSION, schema_version

        with state.reader() as store:
            version = schema_version(store.connection())
            body = {"status": "ok", "schema_version": version, "schema_version_supported": SCHEMA_VERSION,
                    "models": names(store, "models"), "counts": store.remember("overview", lambda: queries.overview(store)),
                    "text_search": bool(state.config.model), "image_search": bool(state.config.model)}
        body["snapshot"] = state.snapshots.status() if state.snapshots is not None else None
        return ApiJSON(body)

    @router.get("/checkpoints", summary="Checkpoints with source, fingerprint and last run.")
    def checkpoints(request: Request, limit: int | None = None, offset: int = 0) -> Response:
        limit, offset = state.limit(limit, offset)
        return answer(state, request, lambda store: sliced(queries.checkpoint_provenance(store), limit, offset))

    @router.get("/artists", summary="Catalog rows; q searches name, id and aliases; kind: artist or character.")
    def artists(request: Request, q: str = "", kind: str = "", tag: str = "", movement: str = "", medium: str = "",
                limit: int | None = None, offset: int = 0) -> Response:
        limit, offset = state.limit(limit, offset)
        filt = queries.ArtistFilter(name=q, tag=tag, movement=movement, medium=medium)

        def build(store) -> ApiJSON:
            if kind:
                _check_kind(store, kind)
            return page(queries.artists_page(store, filt, limit=limit + 1, offset=offset, kind=kind), limit, offset)

        return answer(state, request, build)

    @router.get("/scores", summary="Per-artist scores (artist_scores) with their CIs.")
    async def scores(request: Request, checkpoint: str = "", artist_id: str = "", metric: str = "", model: str = "",
                     limit: int | None = None, offset: int = 0) -> Response:
        limit, offset = state.limit(limit, offset)

        def build(store) -> ApiJSON:
            if model:
                check_name("model", model, names(store, "models"), "model")
            if checkpoint:
                check_name("checkpoint", checkpoint, names(store, "checkpoints"), "checkpoint")
            if metric:
                check_name("metric", metric, names(store, "metrics"), "metric")
            if artist_id:
                _artist(store, "artist_id", artist_id)
            filt = queries.ScoreFilter(model=model, checkpoint=checkpoint, artist_id=artist_id, metric=metric)
            read_model = store.read_model()
            if read_model is not None and read_model.scores is not None:
                return page_json(*read_model.scores.page(filt, limit, offset), limit, offset)
            with readmodel.relations(store) as source:  # the read model's encoding, from the page's own query
                relation = queries.artist_scores(source, filt, limit=limit + 1, offset=offset)
                return page_json(*readmodel.page_json(relation, limit), limit, offset)

        return await answer_soon(state, request, build)

    @router.get("/leaderboard", summary="checkpoint_scores of one model (default: the most used).")
    def leaderboard(request: Request, model: str = "", limit: int | None = None, offset: int = 0) -> Response:
        limit, offset = state.limit(limit, offset)

        def build(store) -> ApiJSON:
            name = _model(store, model)
            return sliced(queries.leaderboard(store, name), limit, offset, model=name)

        return answer(state, request, build)

    return router


def comparison_tree(pairs) -> dict[str, dict[str, dict[str, list[str]]]]:
    """finetune -> base -> model -> its compared metrics (sorted), from ``queries.comparison_pairs``:
    a request resolves its names by lookups (filtering the pairs' frame took ~4 ms a request)."""
    tree: dict[str, dict[str, dict[str, list[str]]]] = {}
    for base, finetune, model, metric in pairs[["base", "finetune", "model", "metric"]].itertuples(index=False):
        tree.setdefault(finetune, {}).setdefault(base, {}).setdefault(model, []).append(metric)
    for bases in tree.values():
        for models in bases.values():
            for model, metrics in models.items():
                models[model] = sorted(set(metrics))
    return tree


def comparison_routes(state: State) -> APIRouter:
    """/comparisons and /neighbors."""
    router = APIRouter()

    @router.get("/comparisons", summary="Per-artist base vs fine-tune deltas with CIs and verdicts.")
    async def comparisons(request: Request, *, finetune: str = "", base: str = "", metric: str = "",
                          verdict: str = "", model: str = "", order: str = "delta", descending: bool = False,
                          limit: int | None = None, offset: int = 0) -> Response:
        from evaluator.scoring.stats import VERDICTS

        limit, offset = state.limit(limit, offset)
        if verdict:
            check_name("verdict", verdict, list(VERDICTS), "verdict")

        def build(store) -> ApiJSON:
            nonlocal finetune, base, model, metric
            tree = store.remember("comparison_tree", lambda: comparison_tree(queries.comparison_pairs(store)))
            finetune = pick_name("finetune", finetune, sorted(tree), "fine-tune")
            base = pick_name("base", base, sorted(tree[finetune]), "base of " + finetune)
            model = _model(store, model)
            metric = pick_name("metric", metric, tree[finetune][base].get(model, []), "compared metric")
            read_model = store.read_model()
            try:
                if read_model is not None:
                    group = read_model.comparison_group(store, base, finetune, model, metric, order, descending)
                    items, more = group.page(verdict, limit, offset)
                else:  # the same encoding, from the page's own query
                    with readmodel.relations(store) as source:
                        relation = queries.comparison_table(source, base, finetune, model, metric, verdict=verdict,
                                                            order=order, descending=descending, limit=limit + 1,
                                                            offset=offset)
                        items, more = readmodel.page_json(relation, limit)
            except InputError as exc:
                raise ApiError(str(exc), field="order") from exc
            summary = comparison_summary(store, base, finetune, model, metric)
            return page_json(items, more, limit, offset, base=base, finetune=finetune, model=model, metric=metric,
                             summary=summary)

        # another order is read on first use (a query): not on the event loop
        return await answer_soon(state, request, build, inline=(order, descending) == readmodel.DEFAULT_ORDER)

    @router.get("/neighbors", summary="An artist's nearest artists per checkpoint.")
    def neighbors(request: Request, artist_id: str, checkpoint: str = "", k: int = 10, model: str = "") -> Response:
        if not 1 <= k <= state.config.max_k:
            raise ApiError(f"k must be within 1..{state.config.max_k} but is {k}", field="k")

        def build(store) -> ApiJSON:
            _artist(store, "artist_id", artist_id)
            if checkpoint:
                check_name("checkpoint", checkpoint, names(store, "checkpoints"), "checkpoint")
            name = _model(store, model)
            frame = queries.artist_neighbors_of(store, artist_id, name, checkpoint=checkpoint, k=k)
            return ApiJSON({"artist_id": artist_id, "model": name, "k": k, "items": records_json(frame)})

        return answer(state, request, build)

    return router


def _png_parameters(path) -> dict:
    """The PNG's A1111 ``parameters`` text and what atelier parses from it (None if absent)."""
    from PIL import Image

    from evaluator.generation.pngmeta import read_generation_info, read_text_chunks

    try:
        with Image.open(path) as image:
            chunks = read_text_chunks(image)
            return {"parameters": chunks.get("parameters"), "generation": read_generation_info(image)}
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return {"parameters": None, "generation": None, "unreadable": str(exc)}


def image_routes(state: State) -> APIRouter:
    """/images/{id}, /images/{id}/thumb, /images/{id}/file."""
    router = APIRouter()

    def stored_file(image_id: int, column: str):
        with state.reader() as store:
            row, _ = queries.image_detail(store, image_id)
        if row.empty:
            raise ApiError(f"no image with image_id {image_id}", field="image_id", status=404)
        relpath = row.iloc[0][column]
        if not isinstance(relpath, str) or not relpath:
            raise ApiError(f"image {image_id} has no {column}", field="image_id", status=404)
        try:
            path = state.wd.resolve_inside(relpath)
        except InputError as exc:
            raise ApiError(f"refused: the {column} of image {image_id} is outside the workdir",
                           field="image_id", status=403) from exc
        if not path.is_file():
            raise ApiError(f"the {column} of image {image_id} is missing from the workdir", field="image_id",
                           status=404)
        return path

    @router.get("/images/{image_id}", summary="An image's row, its per-image scores and its PNG parameters.")
    def image(image_id: int) -> ApiJSON:
        with state.reader() as store:
            row, scores = queries.image_detail(store, image_id)
        if row.empty:
            raise ApiError(f"no image with image_id {image_id}", field="image_id", status=404)
        info = records(row)[0]
        try:
            meta = _png_parameters(stored_file(image_id, "path"))
        except ApiError as exc:
            meta = {"parameters": None, "generation": None, "unreadable": exc.message}
        return ApiJSON({"image": info, "scores": records(scores), **meta,
                        "file_url": f"/images/{image_id}/file", "thumb_url": f"/images/{image_id}/thumb"})

    @router.get("/images/{image_id}/file", summary="The image file (only from inside the workdir).")
    def image_file(image_id: int) -> FileResponse:
        return FileResponse(stored_file(image_id, "path"))

    @router.get("/images/{image_id}/thumb", summary="The image's thumbnail (JPEG, max side 192).")
    def image_thumb(image_id: int) -> FileResponse:
        return FileResponse(stored_file(image_id, "thumb_path"))

    return router


SEARCH_BODY_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SearchBody.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "The query image (needs --model)."},
        "k": {"type": "integer", "default": 10}, "checkpoint": {"type": "string"}, "artist_id": {"type": "string"}}}},
}}}
UPLOAD_FIELDS = ("image", "k", "checkpoint", "artist_id")
ROUTE_THREADS = 128  # anyio's default is 40: fewer than the 50 clients the bench runs


def _sql_time_limit() -> float:
    """User SQL's own limit, or, when the request's deadline comes sooner, a second past it:
    the deadline answers (503), and the query's process stops itself a second later."""
    watcher = deadline.current()
    if watcher is None:
        return queries.SQL_TIME_LIMIT
    return max(0.1, min(queries.SQL_TIME_LIMIT, watcher.remaining() + 1.0))


async def _search_body(request: Request, state: State) -> SearchQuery:
    """The query of POST /search: JSON ``{"text"|"image_id", ...}`` or a multipart upload ``image``."""
    from pydantic import ValidationError

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _upload_query(request, state)
    try:
        return json_search_query(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def json_search_query(body: bytes) -> SearchQuery:
    """The query of a JSON POST /search body; pydantic's ValidationError or an ApiError naming the field."""
    parsed = SearchBody.model_validate_json(body)
    if (parsed.text is None) == (parsed.image_id is None):
        raise ApiError("give exactly one of text and image_id (or upload an image as multipart field 'image')",
                       field="text")
    if parsed.text is not None and not parsed.text.strip():
        raise ApiError("text must not be empty", field="text")
    return SearchQuery(text=parsed.text, image_id=parsed.image_id, k=parsed.k,
                       checkpoint=parsed.checkpoint or "", artist_id=parsed.artist_id or "")


async def _upload_query(request: Request, state: State) -> SearchQuery:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    if not state.config.model:
        raise ApiError("search by an uploaded image needs the server started with --model (and --pretrained)",
                       field="image")
    try:
        form = await request.form(max_files=1, max_fields=len(UPLOAD_FIELDS), max_part_size=1 << 16)
    except MultiPartException as exc:
        raise ApiError(f"the multipart body is refused: {exc.message}", field="image") from exc
    try:
        for name in form:
            if name not in UPLOAD_FIELDS:
                close = suggest(name, UPLOAD_FIELDS)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ApiError(f"unknown form field {name!r}{hint} (known: {', '.join(UPLOAD_FIELDS)})",
                               field=name, suggestions=close)
        k_text = form.get("k") or "10"  # the cheap fields first: decoding is the costly part
        if not isinstance(k_text, str) or not k_text.strip().isdigit():
            raise ApiError(f"k must be a whole number but is {k_text!r}", field="k")
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError("upload the query image as the multipart file field 'image'", field="image")
        data = await upload.read(state.uploads.max_bytes + 1)
        image = await run_in_threadpool(decode_upload, data, state.uploads, upload.filename or "")
        return SearchQuery(image=image, k=int(k_text), checkpoint=str(form.get("checkpoint") or ""),
                           artist_id=str(form.get("artist_id") or ""))
    finally:
        await form.close()


def run_search(state: State, query: SearchQuery) -> tuple[dict, bool]:
    """POST /search's hits for a checked query (k, filters), and whether they were remembered."""
    if not 1 <= query.k <= state.config.max_k:
        raise ApiError(f"k must be within 1..{state.config.max_k} but is {query.k}", field="k")
    with state.reader() as store:
        if query.checkpoint:
            check_name("checkpoint", query.checkpoint, names(store, "checkpoints"), "checkpoint")
        if query.artist_id:
            _artist(store, "artist_id", query.artist_id)
        return state.search.search(store, query)


def inline_search(state: State, query: SearchQuery) -> bool:
    """Whether ``query`` is answered on the event loop: by an image id, unfiltered, with the
    index in memory and the read model ready (a lookup, FAISS and a slice of rows)."""
    by_id = query.image_id is not None and not (query.checkpoint or query.artist_id)
    return by_id and state.search.has_index() and state.snapshots is not None and state.snapshots.ready()


class SearchById:
    """ASGI: POST /search with a JSON image id and no filters, answered before FastAPI's routing
    (two fifths of such a search's CPU): the body checked by the same model, the hits made by
    the same function. Anything else, an error included, goes on to the route with its body
    (``replay``), which answers it as always. Token, rate and deadline still apply (outside)."""

    def __init__(self, app: Callable, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/search"
                and _content_type(scope) == b"application/json"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        answer = self.answer(body)
        if answer is None:
            await self.app(scope, replay(body, receive), send)
            return
        await answer(scope, receive, send)

    def answer(self, body: bytes) -> ApiJSON | None:
        try:  # an invalid body, a text query and the search's own errors are the route's to answer
            query = json_search_query(body)
            if not inline_search(self.state, query):
                return None
            with inline_work():
                hits, remembered = run_search(self.state, query)
        except Exception:  # noqa: BLE001 - the route answers them in its own words
            return None
        return ApiJSON(hits, headers={"X-Cache": "hit" if remembered else "miss"})


def _content_type(scope: dict) -> bytes:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return value.split(b";")[0].strip().lower()
    return b""


async def _read_body(receive: Callable) -> bytes:
    """The whole request body (``Guard`` has bounded its size already)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: what came so far
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that gives ``body`` once, then waits on the real one (for a disconnect)."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def query_routes(state: State) -> APIRouter:
    """POST /sql and POST /search."""
    router = APIRouter()

    @router.post("/sql", summary="One read-only query (no file access, row and time limits); JSON or CSV.")
    def sql(body: SqlBody) -> Response:
        import duckdb

        queries.keep_spare_worker()  # from the second query on, none waits for a worker's start-up
        with state.reader() as store:
            try:
                result = queries.run_user_sql(store, body.query, row_limit=body.row_limit or queries.SQL_ROW_LIMIT,
                                              time_limit=_sql_time_limit())
            except (InputError, TimeoutError, duckdb.Error) as exc:
                raise ApiError(str(exc), field="query") from exc
        headers = {"X-Truncated": str(result.truncated).lower(), "X-Row-Limit": str(result.row_limit),
                   "X-Truncated-By": result.truncated_by or "none"}
        if body.format == "csv":
            return Response(queries.csv_bytes(result.frame), media_type="text/csv; charset=utf-8", headers=headers)
        return ApiJSON({"columns": list(result.frame.columns), "rows": records(result.frame),
                        "truncated": result.truncated, "truncated_by": result.truncated_by or None,
                        "row_limit": result.row_limit, "byte_limit": result.byte_limit,
                        "seconds": round(result.seconds, 4)}, headers=headers)

    @router.post("/search", summary="Nearest images to a text, an indexed image or an uploaded image.",
                 description="JSON `{\"text\": ...}` or `{\"image_id\": ...}`, or multipart with the file field "
                             "`image` (size, pixel and decode limits; needs --model). Optional `k`, `checkpoint`, "
                             "`artist_id`.", openapi_extra=SEARCH_BODY_DOC)
    async def search(request: Request) -> ApiJSON:
        query = await _search_body(request, state)
        if inline_search(state, query):
            with inline_work():  # the stored vector, FAISS and the read model's rows: no query, no model
                hits, remembered = run_search(state, query)
        else:
            hits, remembered = await run_in_threadpool(run_search, state, query)
        return ApiJSON(hits, headers={"X-Cache": "hit" if remembered else "miss"})

    return router


def _error_response(status: int, body: dict, headers: dict[str, str] | None = None) -> ApiJSON:
    return ApiJSON({"error": body.get("error"), "field": body.get("field"), "suggestions": body.get("suggestions", [])},
                   status_code=status, headers=headers)


def state_seconds(request: Request) -> float:
    """The request time limit of the app serving ``request``."""
    return request.app.state.atelier.config.request_timeout or 0.0


def install_error_handlers(app: FastAPI) -> None:
    """Every failure as JSON naming the field: ours, FastAPI's validation, Starlette's 404/405."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> ApiJSON:
        return _error_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(StoreLockedError)
    async def locked(request: Request, exc: StoreLockedError) -> ApiJSON:
        error = busy(0)
        return _error_response(503, error.body(), error.headers)

    @app.exception_handler(deadline.DeadlinePassed)
    async def too_late(request: Request, exc: deadline.DeadlinePassed) -> ApiJSON:
        seconds = state_seconds(request)
        return _error_response(503, json.loads(deadline.timeout_body(seconds)),
                               {"Retry-After": str(max(1, math.ceil(seconds / 2)))})

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> ApiJSON:
        return _error_response(400, {"error": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> ApiJSON:
        first = exc.errors()[0] if exc.errors() else {}
        names = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = names[-1] if names else None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid request")
        return _error_response(400, {"error": message, "field": field})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> ApiJSON:
        return _error_response(exc.status_code, {"error": str(exc.detail)}, getattr(exc, "headers", None))


def create_app(config: ServeConfig) -> FastAPI:
    """The API over ``config.workdir``: routes, JSON errors, guard and deadline, CORS if asked."""
    from importlib.metadata import version

    state = State(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        from anyio import to_thread

        # A route waiting for a work slot (snapshot.WORK_SLOTS) holds its thread: with more
        # threads than clients, a remembered answer never queues behind the computing ones.
        to_thread.current_default_thread_limiter().total_tokens = ROUTE_THREADS
        yield
        state.close()  # the snapshot and, if this process made it, its folder

    app = FastAPI(title="atelier", version=version("atelier"), default_response_class=ApiJSON, lifespan=lifespan,
                  description="Read-only API over an atelier workdir: scores, comparisons, neighbors, "
                              "images, search and read-only SQL.")
    app.state.atelier = state
    for routes in (table_routes, comparison_routes, image_routes, query_routes):
        app.include_router(routes(state))
    install_error_handlers(app)
    app.add_middleware(RememberedPages, state=state)
    app.add_middleware(SearchById, state=state)
    app.add_middleware(deadline.Deadline, seconds=config.request_timeout)
    limiter = RateLimiter(config.rate_limit, config.rate_burst) if config.rate_limit else None
    app.add_middleware(Guard, token=config.token, max_body_bytes=config.max_body_bytes,
                       max_upload_bytes=config.max_upload_bytes + (64 << 10), limiter=limiter)
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # added last, so outermost: a browser's preflight (no token) is answered here
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def app_from_env() -> FastAPI:
    """The app of one `atelier serve --workers N` process: its config from ``ATELIER_SERVE_CONFIG``.

    uvicorn imports this by name (``evaluator.serve.app:app_from_env``, ``factory=True``) in
    each worker; the token is read again from the config's token file.
    """
    from evaluator.workspace import settings

    text = settings.serve_config()
    if text is None:
        raise InputError("ATELIER_SERVE_CONFIG is not set: start the workers with `atelier serve --workers N`")
    return create_app(ServeConfig.from_json(text))
