"""Pure ASGI middleware: request ids on every response, a request body size cap, request
metrics and the access log."""

from __future__ import annotations

import contextlib
import json
import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careflow import tracing
from careflow.errors import error_body, request_id_of
from careflow.kit.context import new_request_id, request_id_var
from careflow.kit.metrics import HTTP_LATENCY

# Visible ASCII, no spaces: trace ids such as AWS's "Root=1-…;Parent=…;Sampled=1" or a W3C
# traceparent come back as sent, and nothing that could break a log line gets in.
_SAFE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


class ContainAnsweredErrors:
    """The outermost layer: an unhandled error stops here once it has been answered.

    Starlette's error middleware answers an unhandled exception with the 500 handler (which
    logs its type and the request id, never its text) and then re-raises it, so that the
    server logs it again: as plain text, with the exception's message and traceback, where a
    driver's or a library's message can quote the patient data it was handling. Nothing of
    it is lost by stopping it here; a lifespan error still propagates.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Answered and logged (ids only) by the 500 handler before it was re-raised.
        with contextlib.suppress(Exception):
            await self.app(scope, receive, send)


class RequestIdMiddleware:
    """Echo the caller's ``X-Request-ID`` (when sane) or mint one; expose it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if given and _SAFE_REQUEST_ID.fullmatch(given) else new_request_id()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        tracing.annotate(request_id=request_id)  # on the request's span, when tracing

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class NulGuardMiddleware:
    """Answer 400 to a NUL character in the path or the query string, before any route.

    PostgreSQL cannot hold NUL in text, not even as a query parameter, so a filter such as
    ``?journey_type=%00`` would fail in the driver (a 500). Bodies are checked where they
    are parsed (``StrictInput``, ``careflow.kit.text``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope.get("path", "")
            query: bytes = scope.get("query_string", b"")
            field = None
            if "\x00" in path:
                field = "path"
            elif b"%00" in query or b"\x00" in query:
                field = "query"
            if field is not None:
                problem = {"field": field, "message": "may not contain NUL characters"}
                body = error_body(
                    path,
                    400,
                    "validation_error",
                    "VALIDATION_ERROR",
                    "Request validation failed",
                    [problem],
                    request_id=request_id_of(scope),
                )
                await _send_json(send, 400, body)
                return
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, body: object) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodySizeLimitMiddleware:
    """Answer 413 before reading more than ``max_bytes`` of a request body.

    A body announced by ``Content-Length`` is judged by it. A streamed one (chunked, no
    length) is read here first, up to the cap, and handed on only if it fits: refusing it
    half-way through the app's own read would not work, as FastAPI turns any failure while
    reading a body into its own 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None:
            if length > self.max_bytes:
                await self._reject(scope, send)
                return
            # The server holds the client to its Content-Length.
            await self.app(scope, receive, send)
            return
        buffered, complete = await read_capped(receive, self.max_bytes)
        if not complete:
            await self._reject(scope, send)
            return
        await self.app(scope, replay(buffered, receive), send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        body = error_body(
            scope.get("path", ""),
            413,
            "payload_too_large",
            "PAYLOAD_TOO_LARGE",
            f"Request body exceeds {self.max_bytes} bytes",
            [],
            request_id=request_id_of(scope),
        )
        await _send_json(send, 413, body)


async def read_capped(receive: Receive, max_bytes: int) -> tuple[list[Message], bool]:
    """A request's body messages, and False once they exceed ``max_bytes``.

    A client that leaves ends the list with its disconnect message (complete: the app sees
    the disconnect when the messages are replayed to it).
    """
    messages: list[Message] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, True
        received += len(message.get("body", b""))
        if received > max_bytes:
            return messages, False
        if not message.get("more_body", False):
            return messages, True


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` (a body already read) first, then the client's."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


_access_log = structlog.get_logger("careflow.http")


class RequestRecordMiddleware:
    """What each HTTP request leaves behind: its duration in the metrics and one access-log
    line (``http_request``), both by method, route template (never the raw path, never the
    query) and status. Inside ``RequestIdMiddleware``, so the line carries the request's id.
    An unhandled error is recorded as a 500, as it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_LATENCY.labels(scope["method"], route, str(status)).observe(elapsed)
            _access_log.info(
                "http_request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )
