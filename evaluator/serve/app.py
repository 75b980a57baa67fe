"""The FastAPI application of `atelier serve`: ``create_app(config)``.

Reads DIR/atelier.duckdb (one read-only connection per request, through
``evaluator.workspace.queries``, the SQL the dashboard runs too), the FAISS index and the
image files inside DIR (``Workdir.resolve_inside``: a stored path escaping DIR is
refused). Writes nothing. Every error is JSON ``{"error", "field", "suggestions"}``;
with a token, every request needs ``Authorization: Bearer <token>`` (constant-time check).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, Response

from evaluator.errors import InputError
from evaluator.serve.config import ServeConfig
from evaluator.serve.errors import ApiError, check_name, pick_name
from evaluator.serve.jsonio import ApiJSON, records
from evaluator.serve.reader import RequestReader, busy
from evaluator.serve.search import SearchEngine, SearchQuery
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
    """What the routes share: the config, the workdir, the search engine."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.wd = Workdir.at(config.workdir, create=False)
        self.search = SearchEngine(config)

    def reader(self) -> RequestReader:
        return RequestReader(self.wd.store, self.config.lock_wait)

    def limit(self, limit: int | None, offset: int) -> tuple[int, int]:
        """The page asked for, within 1..max_limit and offset >= 0, else a 400 naming it."""
        limit = self.config.default_limit if limit is None else limit
        if not 1 <= limit <= self.config.max_limit:
            raise ApiError(f"limit must be within 1..{self.config.max_limit} but is {limit}", field="limit")
        if offset < 0:
            raise ApiError(f"offset must be >= 0 but is {offset}", field="offset")
        return limit, offset


def page(frame, limit: int, offset: int, **extra) -> ApiJSON:
    """One page of rows; ``frame`` holds up to ``limit + 1`` rows, the extra one saying "more"."""
    more = len(frame) > limit
    return ApiJSON({**extra, "items": records(frame.head(limit)), "limit": limit, "offset": offset,
                    "next_offset": offset + limit if more else None})


def sliced(frame, limit: int, offset: int, **extra) -> ApiJSON:
    """A page of a small, fully read table."""
    return page(frame.iloc[offset:offset + limit + 1], limit, offset, **extra)


def _artist(store: RequestReader, field: str, artist_id: str) -> str:
    if queries.artist_exists(store, artist_id):
        return artist_id
    return check_name(field, artist_id, queries.artist_ids(store), "artist")


def _model(store: RequestReader, model: str | None) -> str:
    """The model asked for (checked), else the most used one."""
    known = queries.models(store)
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
            return ApiJSON({"status": "ok", "schema_version": version, "schema_version_supported": SCHEMA_VERSION,
                            "models": queries.models(store), "counts": queries.overview(store),
                            "text_search": bool(state.config.model)})

    @router.get("/checkpoints", summary="Checkpoints with source, fingerprint and last run.")
    def checkpoints(limit: int | None = None, offset: int = 0) -> ApiJSON:
        limit, offset = state.limit(limit, offset)
        with state.reader() as store:
            return sliced(queries.checkpoint_provenance(store), limit, offset)

    @router.get("/artists", summary="Catalog artists; q searches name, id and aliases.")
    def artists(q: str = "", tag: str = "", movement: str = "", medium: str = "",
                limit: int | None = None, offset: int = 0) -> ApiJSON:
        limit, offset = state.limit(limit, offset)
        filt = queries.ArtistFilter(name=q, tag=tag, movement=movement, medium=medium)
        with state.reader() as store:
            return page(queries.artists_page(store, filt, limit=limit + 1, offset=offset), limit, offset)

    @router.get("/scores", summary="Per-artist scores (artist_scores) with their CIs.")
    def scores(checkpoint: str = "", artist_id: str = "", metric: str = "", model: str = "",
               limit: int | None = None, offset: int = 0) -> ApiJSON:
        limit, offset = state.limit(limit, offset)
        with state.reader() as store:
            if model:
                check_name("model", model, queries.models(store), "model")
            if checkpoint:
                check_name("checkpoint", checkpoint, queries.checkpoint_names(store), "checkpoint")
            if metric:
                check_name("metric", metric, queries.metric_names(store), "metric")
            if artist_id:
                _artist(store, "artist_id", artist_id)
            filt = queries.ScoreFilter(model=model, checkpoint=checkpoint, artist_id=artist_id, metric=metric)
            return page(queries.artist_scores(store, filt, limit=limit + 1, offset=offset), limit, offset)

    @router.get("/leaderboard", summary="checkpoint_scores of one model (default: the most used).")
    def leaderboard(model: str = "", limit: int | None = None, offset: int = 0) -> ApiJSON:
        limit, offset = state.limit(limit, offset)
        with state.reader() as store:
            model = _model(store, model)
            return sliced(queries.leaderboard(store, model), limit, offset, model=model)

    return router


def comparison_routes(state: State) -> APIRouter:
    """/comparisons and /neighbors."""
    router = APIRouter()

    @router.get("/comparisons", summary="Per-artist base vs fine-tune deltas with CIs and verdicts.")
    def comparisons(*, finetune: str = "", base: str = "", metric: str = "", verdict: str = "", model: str = "",
                    order: str = "delta", descending: bool = False,
                    limit: int | None = None, offset: int = 0) -> ApiJSON:
        from evaluator.scoring.stats import VERDICTS

        limit, offset = state.limit(limit, offset)
        if verdict:
            check_name("verdict", verdict, list(VERDICTS), "verdict")
        with state.reader() as store:
            pairs = queries.comparison_pairs(store)
            finetune = pick_name("finetune", finetune, sorted(set(pairs["finetune"])), "fine-tune")
            pairs = pairs[pairs["finetune"] == finetune]
            base = pick_name("base", base, sorted(set(pairs["base"])), "base of " + finetune)
            model = _model(store, model)
            pairs = pairs[(pairs["base"] == base) & (pairs["model"] == model)]
            metric = pick_name("metric", metric, sorted(set(pairs["metric"])), "compared metric")
            try:
                frame = queries.comparison_table(store, base, finetune, model, metric, verdict=verdict, order=order,
                                                 descending=descending, limit=limit + 1, offset=offset)
            except InputError as exc:
                raise ApiError(str(exc), field="order") from exc
            summary = queries.comparison_summary(store, base, finetune, model, metric)
            return page(frame, limit, offset, base=base, finetune=finetune, model=model, metric=metric,
                        summary=summary)

    @router.get("/neighbors", summary="An artist's nearest artists per checkpoint.")
    def neighbors(artist_id: str, checkpoint: str = "", k: int = 10, model: str = "") -> ApiJSON:
        if not 1 <= k <= state.config.max_k:
            raise ApiError(f"k must be within 1..{state.config.max_k} but is {k}", field="k")
        with state.reader() as store:
            _artist(store, "artist_id", artist_id)
            if checkpoint:
                check_name("checkpoint", checkpoint, queries.checkpoint_names(store), "checkpoint")
            model = _model(store, model)
            frame = queries.artist_neighbors_of(store, artist_id, model, checkpoint=checkpoint, k=k)
            return ApiJSON({"artist_id": artist_id, "model": model, "k": k, "items": records(frame)})

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


def query_routes(state: State) -> APIRouter:
    """POST /sql and POST /search."""
    router = APIRouter()

    @router.post("/sql", summary="One read-only query (no file access, row and time limits); JSON or CSV.")
    def sql(body: SqlBody) -> Response:
        import duckdb

        with state.reader() as store:
            try:
                result = queries.run_user_sql(store, body.query, row_limit=body.row_limit or queries.SQL_ROW_LIMIT)
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

    @router.post("/search", summary="Nearest images to a text or an indexed image (optional filters).")
    def search(body: SearchBody) -> ApiJSON:
        if (body.text is None) == (body.image_id is None):
            raise ApiError("give exactly one of text and image_id", field="text")
        if body.text is not None and not body.text.strip():
            raise ApiError("text must not be empty", field="text")
        if body.k > state.config.max_k:
            raise ApiError(f"k must be within 1..{state.config.max_k} but is {body.k}", field="k")
        with state.reader() as store:
            if body.checkpoint:
                check_name("checkpoint", body.checkpoint, queries.checkpoint_names(store), "checkpoint")
            if body.artist_id:
                _artist(store, "artist_id", body.artist_id)
            query = SearchQuery(text=body.text, image_id=body.image_id, k=body.k,
                                checkpoint=body.checkpoint or "", artist_id=body.artist_id or "")
            return ApiJSON(state.search.search(store, query))

    return router


def _error_response(status: int, body: dict, headers: dict[str, str] | None = None) -> ApiJSON:
    return ApiJSON({"error": body.get("error"), "field": body.get("field"), "suggestions": body.get("suggestions", [])},
                   status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every failure as JSON naming the field: ours, FastAPI's validation, Starlette's 404/405."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> ApiJSON:
        return _error_response(exc.status, exc.body(), exc.headers)

    @app.exception_handler(StoreLockedError)
    async def locked(request: Request, exc: StoreLockedError) -> ApiJSON:
        error = busy(0)
        return _error_response(503, error.body(), error.headers)

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


class Guard:
    """ASGI middleware: the bearer token (constant-time) and the request body size, before any route."""

    def __init__(self, app: Callable, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self.refusal(headers)
        if refusal is not None:
            status, message, extra = refusal
            body = json.dumps({"error": message, "field": None, "suggestions": []}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    *extra]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def refusal(self, headers: dict[bytes, bytes]) -> tuple[int, str, list] | None:
        if self.token is not None:
            scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                return 401, "missing or wrong token: send Authorization: Bearer <token>", [(b"www-authenticate", b"Bearer")]
        if b"transfer-encoding" in headers:
            return 411, "send a Content-Length (chunked request bodies are not accepted)", []
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return 400, "Content-Length is not a number", []
        if int(length) > self.max_body_bytes:
            return 413, f"the request body is {int(length)} bytes; the limit is {self.max_body_bytes}", []
        return None


def create_app(config: ServeConfig) -> FastAPI:
    """The API over ``config.workdir``: routes, JSON errors, token and body guard, CORS if asked."""
    from importlib.metadata import version

    app = FastAPI(title="atelier", version=version("atelier"), default_response_class=ApiJSON,
                  description="Read-only API over an atelier workdir: scores, comparisons, neighbors, "
                              "images, search and read-only SQL.")
    state = State(config)
    app.state.atelier = state
    for routes in (table_routes, comparison_routes, image_routes, query_routes):
        app.include_router(routes(state))
    install_error_handlers(app)
    app.add_middleware(Guard, token=config.token, max_body_bytes=config.max_body_bytes)
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # added last, so outermost: a browser's preflight (no token) is answered here
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
