"""What every request passes before a route: the token, the body size, the client's rate.

Reads and writes nothing. ``Guard`` (ASGI middleware) refuses, as JSON naming the reason:
a missing or wrong bearer token (401, constant-time comparison), a chunked body (411), a
Content-Length over the limit (413), and a client over its rate (429 with Retry-After).
The rate is a token bucket per client address (``RateLimiter``), per worker process.
"""

from __future__ import annotations

import collections
import hmac
import json
import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A token bucket per client: ``rate`` requests a second on average, bursts of ``burst``.

    ``admit`` answers None (go ahead) or the seconds until the client's next request would be
    admitted. The least recently seen clients are forgotten past ``max_clients``.
    """

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def admit(self, client: str, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = None
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


class Guard:
    """ASGI middleware: token, body size and rate limit, before any route."""

    def __init__(self, app: Callable, token: str | None, max_body_bytes: int, max_upload_bytes: int | None = None,
                 limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.max_body_bytes = max_body_bytes  # a JSON body
        self.max_upload_bytes = max_upload_bytes or max_body_bytes  # a multipart body (an image)
        self.limiter = limiter

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self.refusal(headers) or self.over_rate(scope)
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
        upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        if int(length) > limit:
            what = "an upload" if upload else "a JSON body"
            return 413, f"the request body is {int(length)} bytes; the limit for {what} is {limit}", []
        return None

    def over_rate(self, scope: dict) -> tuple[int, str, list] | None:
        """A 429 when this client (its address) is over its rate; checked after the token."""
        if self.limiter is None:
            return None
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.limiter.admit(client)
        if wait is None:
            return None
        retry = max(1, math.ceil(wait))
        return 429, (f"too many requests from {client}: the limit is {self.limiter.rate:g} a second "
                     f"(bursts of {self.limiter.burst}); retry in {retry} s"), [(b"retry-after", str(retry).encode())]
