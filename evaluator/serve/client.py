"""A small client of `atelier serve` (httpx): what a training script or a CI job calls.

Reads over HTTP only; writes nothing. Each method returns the decoded JSON; an error
answer raises ``ApiClientError`` with the status, the message, the field and suggestions::

    with AtelierClient("http://127.0.0.1:8765", token=None) as api:
        lost = api.comparisons(finetune="ft-lora", metric="artist_similarity", verdict="lost")
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx


class ApiClientError(RuntimeError):
    """An error answer of the API (4xx/5xx) with its JSON body's fields."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 suggestions: list[str] | None = None, retry_after: str | None = None) -> None:
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.field = status, error, field
        self.suggestions = suggestions or []
        self.retry_after = retry_after


class AtelierClient:
    """Typed-enough calls of every endpoint; ``request`` for anything else."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, retry_for: float = 0.0) -> None:
        """``retry_for``: seconds to keep retrying a 503 or 429 that carries Retry-After (0: never)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.retry_for = retry_for

    def __enter__(self) -> AtelierClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer, an ``ApiClientError`` if it is an error (after ``retry_for`` s of retries)."""
        give_up = time.monotonic() + self.retry_for
        response = self.http.request(method, path, **kwargs)
        while response.status_code in (429, 503) and response.headers.get("retry-after", "").isdigit():
            pause = float(response.headers["retry-after"])
            if time.monotonic() + pause > give_up:
                break
            time.sleep(pause)
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": response.text}
            raise ApiClientError(response.status_code, str(body.get("error")), body.get("field"),
                                 body.get("suggestions"), response.headers.get("retry-after"))
        return response

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def health(self) -> dict:
        return self._get("/health")

    def checkpoints(self, **params: Any) -> dict:
        return self._get("/checkpoints", **params)

    def artists(self, q: str | None = None, **params: Any) -> dict:
        return self._get("/artists", q=q, **params)

    def scores(self, **params: Any) -> dict:
        """``checkpoint``, ``artist_id``, ``metric``, ``model``, ``limit``, ``offset``."""
        return self._get("/scores", **params)

    def leaderboard(self, model: str | None = None, **params: Any) -> dict:
        return self._get("/leaderboard", model=model, **params)

    def comparisons(self, **params: Any) -> dict:
        """``finetune``, ``base``, ``metric``, ``verdict``, ``model``, ``order``, ``descending``, pages."""
        return self._get("/comparisons", **params)

    def neighbors(self, artist_id: str, **params: Any) -> dict:
        return self._get("/neighbors", artist_id=artist_id, **params)

    def image(self, image_id: int) -> dict:
        return self._get(f"/images/{int(image_id)}")

    def image_file(self, image_id: int, thumb: bool = False) -> bytes:
        return self.request("GET", f"/images/{int(image_id)}/{'thumb' if thumb else 'file'}").content

    def sql(self, query: str, format: str = "json", row_limit: int | None = None) -> Any:
        body = {"query": query, "format": format, **({"row_limit": row_limit} if row_limit else {})}
        response = self.request("POST", "/sql", json=body)
        return response.text if format == "csv" else response.json()

    def search(self, *, text: str | None = None, image_id: int | None = None, k: int = 10,
               checkpoint: str | None = None, artist_id: str | None = None) -> dict:
        body = {"text": text, "image_id": image_id, "k": k, "checkpoint": checkpoint, "artist_id": artist_id}
        return self.request("POST", "/search", json={k_: v for k_, v in body.items() if v is not None}).json()

    def search_image(self, image: bytes, *, filename: str = "query.png", k: int = 10,
                     checkpoint: str | None = None, artist_id: str | None = None) -> dict:
        """Nearest images to an uploaded image (multipart field ``image``; the server needs --model)."""
        fields = {"k": str(k), "checkpoint": checkpoint, "artist_id": artist_id}
        return self.request("POST", "/search", files={"image": (filename, image)},
                            data={k_: v for k_, v in fields.items() if v is not None}).json()

    def pages(self, path: str, **params: Any) -> Iterator[dict]:
        """Every item of a paginated endpoint, following ``next_offset``."""
        offset = params.pop("offset", 0)
        while offset is not None:
            page = self._get(path, offset=offset, **params)
            yield from page["items"]
            offset = page["next_offset"]
