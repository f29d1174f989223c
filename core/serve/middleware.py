"""One ASGI middleware around every request: bearer auth, the body cap, metrics and the access log.

Auth: with a token, every path but ``/healthz`` and the search page's three static files (which hold no
data: the page asks for the token and sends it with its API calls) needs ``Authorization: Bearer <token>``
(compared in constant time). Body cap: a declared ``Content-Length`` over the cap is refused at once, a streamed body
as soon as it passes the cap (413). The access log is one JSON object per line on stderr; the query text
(the query string, a search's text) is in it only with ``log_queries``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import sys
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.serve.metrics import Metrics

access_log = logging.getLogger("capsearch.access")
OPEN_PATHS = frozenset({"/healthz", "/", "/ui/app.js", "/ui/app.css"})


class _BodyTooLarge(Exception):
    pass


class _StderrHandler(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment (which tests and embedders may replace)."""

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed stream drops the line, never the request
            sys.stderr.write(self.format(record) + "\n")


def configure_access_log() -> None:
    """Send the access log to stderr as bare JSON lines (once per process)."""
    if not access_log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


def error_message(
    status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "message": message, "hint": None, "errors": None}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, token: str | None, max_body: int, log_queries: bool):
        self.app = app
        self.metrics = metrics
        self.token = f"Bearer {token}".encode() if token else None
        self.max_body = max_body
        self.log_queries = log_queries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        self.metrics.in_flight.inc()
        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                for message in refusal:
                    await send_wrapper(message)
            else:
                await self._call(scope, receive, send_wrapper, status)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, int(status["code"]), time.perf_counter() - start)

    def _refusal(self, scope: Scope) -> tuple[Message, Message] | None:
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.token):
                return error_message(
                    401, "unauthorized", "missing or wrong bearer token", ((b"www-authenticate", b"Bearer"),)
                )
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return error_message(400, "bad_request", "Content-Length is not a number")
            if int(length) > self.max_body:
                return error_message(413, "payload_too_large", f"the body is over {self.max_body} bytes")
        return None

    async def _call(self, scope: Scope, receive: Receive, send: Send, status: dict[str, Any]) -> None:
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, capped_receive, send)
        except _BodyTooLarge:
            if status["started"]:
                raise
            for message in error_message(413, "payload_too_large", f"the body is over {self.max_body} bytes"):
                await send(message)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "method": scope["method"],
            "path": scope["path"],
            "endpoint": endpoint,
            "status": status,
            "ms": round(seconds * 1e3, 2),
            "client": (scope.get("client") or ("-",))[0],
        }
        if self.log_queries:
            entry["query_string"] = scope.get("query_string", b"").decode("latin-1")
            text = scope.get("state", {}).get("query_text")
            if text is not None:
                entry["query"] = text
        access_log.info(json.dumps(entry, ensure_ascii=False))
