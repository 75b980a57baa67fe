"""Request time limits: a request past its deadline gets a 503 JSON, and its work is stopped.

Reads and writes nothing. ``Deadline`` (ASGI middleware) runs each request as a task and
answers ``503`` with ``Retry-After`` when no response has started by the deadline; the
route keeps its thread until it returns, so the DuckDB queries it registered
(``RequestDeadline.watch``) are interrupted, and user SQL is given only the time left
(``remaining``). The server's event loop never waits on a route, so other requests keep
being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import math
import threading
import time
from collections.abc import Callable

_CURRENT: contextvars.ContextVar[RequestDeadline | None] = contextvars.ContextVar("atelier_deadline", default=None)


class DeadlinePassed(RuntimeError):
    """The request's time ran out before this step began."""


class RequestDeadline:
    """One request's deadline and the DuckDB connections to interrupt when it passes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list = []

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def watch(self, con) -> None:
        """Interrupt ``con`` if the deadline passes while it runs (call ``unwatch`` after)."""
        with self._lock:
            if self.expired:
                raise DeadlinePassed(f"the request ran past its {self.seconds:g} s limit")
            self._watched.append(con)

    def unwatch(self, con) -> None:
        with self._lock:
            if con in self._watched:
                self._watched.remove(con)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            watched, self._watched = self._watched, []
        for con in watched:
            try:
                con.interrupt()
            except Exception:  # noqa: BLE001, S110 - a connection already closed has nothing to stop
                pass


def current() -> RequestDeadline | None:
    """The deadline of the request this code runs for (routes run in threads with its context)."""
    return _CURRENT.get()


def timeout_body(seconds: float) -> bytes:
    return json.dumps({"error": f"the request took longer than its {seconds:g} s time limit and was stopped; "
                                "retry, or ask for less (a smaller limit or k)",
                       "field": None, "suggestions": []}).encode()


class Deadline:
    """ASGI middleware: answer 503 (Retry-After) when a request has no response by ``seconds``."""

    def __init__(self, app: Callable, seconds: float | None) -> None:
        self.app = app
        self.seconds = seconds
        self._background: set[asyncio.Task] = set()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not self.seconds:
            await self.app(scope, receive, send)
            return
        deadline = RequestDeadline(self.seconds)
        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if deadline.expired and not started:
                return  # the 503 went out instead; the late answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        token = _CURRENT.set(deadline)
        try:  # the task copies this context, so the route's thread sees the deadline
            task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        finally:
            _CURRENT.reset(token)
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if task in done or started:
            await task  # finished, or a response is already streaming: let it end
            return
        deadline.expire()
        self._background.add(task)
        task.add_done_callback(self._forget)
        body = timeout_body(self.seconds)
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"retry-after", str(max(1, math.ceil(self.seconds / 2))).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _forget(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # consumed: a late failure of a request already answered is not news
