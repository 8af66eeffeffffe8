"""``POST /v1/events`` on its common path, answered by a pure ASGI layer without the router.

Under load FastAPI's routing, dependency solving and middleware cost more than careflow's
own work on an event. This layer answers the common request itself: a JSON body that
validates as an event, a bearer token of a role that may ingest, no query string and no
``Idempotency-Key``. Once the caller is authenticated and the body parsed, it calls the
route's own ``accept_event`` (``events/endpoints.py``): the one place the event is validated
(``validate_event``, once per request), written by the batcher and answered.

Any other request goes on to the route with the body already read: a token that does not
authenticate or a role that may not ingest, a body that is not JSON or not an event, an
idempotent request, an unusual content type. Every error answer, code and envelope therefore
stays the route's own. An error raised by ``accept_event`` (an event that fails validation,
a failed write) is rendered by the app's own exception handlers, as for the route.

Why it is kept: a fast path stays only while it shares the route's validation and
authentication and is worth more than 15 % of the ingestion figure. Measured side by side on
PostgreSQL, alternating the two variants (the same app with and without this layer), the
app alone (raw ASGI calls, 64 at a time, no HTTP client, six rounds of 2,000 events) spent
0.51 ms of CPU an event with it (0.44-0.61 ms) and 0.87 ms without it (0.76-0.99 ms):
routing, dependency solving and the middleware stack would add about 70 % to the cost of an
accepted event, and the ingestion figure is bound by that CPU. ``bench/perf/ingest.py`` on
a shared two-core machine (load average 10-17) showed the same direction in server CPU per
request (4.22 against 4.60 ms over eight pairs, events unbatched at 6-42 req/s), while its
req/s ratios there (0.45-1.00 against 0.36-0.95) were within the machine's noise.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careflow.auth import INGEST_ROLES, Principal, bearer_token
from careflow.events.endpoints import INGEST_PATH, accept_event, router
from careflow.events.schemas import EventIn
from careflow.kit.idempotency import HEADER as IDEMPOTENCY_HEADER
from careflow.kit.middleware import read_capped, replay

_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode("latin-1")


class IngestMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.route = _ingest_route()  # set in the scope, for the request metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != INGEST_PATH
            or scope["method"] != "POST"
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        token = self._token(scope["headers"])
        if token is None:
            await self.app(scope, receive, send)
            return
        messages, body = await self._read(receive)
        accepted = await self._accept(scope, token, body) if body is not None else None
        if accepted is None:
            await self.app(scope, replay(messages, receive), send)
            return
        principal, event = accepted
        app = scope["app"]
        scope["route"] = self.route
        scope.setdefault("state", {})["principal"] = principal
        response: Response
        try:
            response = await accept_event(app, principal, event)
        except Exception as exc:
            response = await _handled(app, scope, receive, exc)
        await response(scope, receive, send)

    def _token(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The bearer token, when the headers are those of the common path."""
        authorization = content_type = None
        content_length = 0
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == _IDEMPOTENCY:
                return None
        if authorization is None or content_type is None:
            return None
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            return None
        if not 0 <= content_length <= self.max_bytes:  # too big: the route's 413
            return None
        return bearer_token(authorization.decode("latin-1"))

    async def _read(self, receive: Receive) -> tuple[list[Message], bytes | None]:
        """The body's messages, and the body unless it exceeds the cap or the client left."""
        messages, complete = await read_capped(receive, self.max_bytes)
        if not complete or messages[-1]["type"] != "http.request":
            return messages, None
        return messages, b"".join(m.get("body", b"") for m in messages)

    @staticmethod
    async def _accept(scope: Scope, token: str, body: bytes) -> tuple[Principal, EventIn] | None:
        """The caller and the parsed event, as the route's dependencies would give them.

        None for any problem, for the route to answer. The event is not validated yet:
        ``accept_event`` does that, for both paths.
        """
        try:
            principal = await scope["app"].state.token_verifier.verify(token)
            if principal.role not in INGEST_ROLES:
                return None
            # As the route reads it: json.loads, then the model in Python mode.
            event = EventIn.model_validate(json.loads(body))
        except Exception:
            return None
        return principal, event


def _ingest_route() -> BaseRoute:
    for route in router.routes:
        if getattr(route, "path", None) == INGEST_PATH and "POST" in getattr(route, "methods", ()):
            return route
    raise RuntimeError(f"no POST {INGEST_PATH} route")  # pragma: no cover - a wiring bug


async def _handled(app: Any, scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The response the app's exception handlers give for ``exc``, as for the route."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(Request(scope, receive), exc)
            return response
    raise exc  # pragma: no cover - careflow installs a handler for Exception
