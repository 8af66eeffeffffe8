"""One error hierarchy, rendered in the envelope of the API family that was called.

Automations family: ``{"error": {"code": "lower_snake", "message", "details"}}``.
Pathway family:     ``{"error": {"code": "UPPER", "message", "details"}, "meta": {"request_id"}}``.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

PATHWAY_PREFIXES = ("/v1/pathway-rules", "/v1/pathway-configs", "/v1/pathway-triggers")


class CareflowError(Exception):
    status_code = 500
    code = "internal_error"
    pathway_code = "INTERNAL_ERROR"
    message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.details = details if details is not None else []
        if code is not None:
            self.code = code
        self.headers = headers
        super().__init__(self.message)


class ValidationError(CareflowError):
    status_code = 400
    code = "validation_error"
    pathway_code = "VALIDATION_ERROR"
    message = "Request validation failed"


class UnauthorizedError(CareflowError):
    status_code = 401
    code = "unauthorized"
    pathway_code = "UNAUTHORIZED"
    message = "Missing or invalid bearer token"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class ForbiddenError(CareflowError):
    status_code = 403
    code = "forbidden"
    pathway_code = "FORBIDDEN"
    message = "Your role may not perform this operation"


class NotFoundError(CareflowError):
    status_code = 404
    code = "not_found"
    pathway_code = "NOT_FOUND"
    message = "Not found"


class ConflictError(CareflowError):
    status_code = 409
    code = "conflict"
    pathway_code = "CONFLICT"
    message = "Conflict"


class IdempotencyKeyInUseError(CareflowError):
    status_code = 409
    code = "idempotency_key_in_use"
    pathway_code = "IDEMPOTENCY_KEY_IN_USE"
    message = "A request with this Idempotency-Key is still being processed"


class IdempotencyKeyReusedError(CareflowError):
    status_code = 422
    code = "idempotency_key_reused"
    pathway_code = "IDEMPOTENCY_KEY_REUSED"
    message = "This Idempotency-Key was already used with a different request body"


class ServiceUnavailableError(CareflowError):
    status_code = 503
    code = "service_unavailable"
    pathway_code = "SERVICE_UNAVAILABLE"
    message = "The database is unavailable; retry shortly"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "5"})
        super().__init__(message, **kwargs)


# Driver errors (named by class, whichever driver raised them) that mean the database could
# not be reached or went away mid-request: the request may be retried as it was.
_UNAVAILABLE_NAMES = frozenset(
    {
        "CannotConnectNowError",
        "ConnectionDoesNotExistError",
        "AdminShutdownError",
        "ConnectionFailureError",
        "PostgresConnectionError",
        "TooManyConnectionsError",
    }
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (503), not that a request is wrong."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | ConnectionError):
        return True
    transient = (sa_exc.OperationalError, sa_exc.InterfaceError)
    if isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, transient)
    ):
        return True
    seen: BaseException | None = exc
    for _ in range(6):  # the driver's error hides behind the adapter's, one or two deep
        if seen is None:
            break
        if type(seen).__name__ in _UNAVAILABLE_NAMES or isinstance(seen, ConnectionError):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def not_found(thing: str) -> NotFoundError:
    """``not_found("automation_rule")`` → 404 ``automation_rule_not_found``."""
    return NotFoundError(
        f"{thing.replace('_', ' ').capitalize()} not found", code=f"{thing}_not_found"
    )


def is_pathway_path(path: str) -> bool:
    return path.startswith(PATHWAY_PREFIXES)


def request_id_of(scope: Scope) -> str | None:
    """The id the request-id middleware gave the request (it tags the scope's state)."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


def error_body(
    path: str,
    status: int,
    code: str,
    pathway_code: str,
    message: str,
    details: Any,
    request_id: str | None = None,
) -> dict[str, Any]:
    if is_pathway_path(path):
        return {
            "error": {"code": pathway_code, "message": message, "details": details},
            "meta": {"request_id": request_id},
        }
    return {"error": {"code": code, "message": message, "details": details}}


def render(request: Request, exc: CareflowError) -> JSONResponse:
    body = error_body(
        request.url.path,
        exc.status_code,
        exc.code,
        exc.pathway_code,
        exc.message,
        exc.details,
        request_id=request_id_of(request.scope),
    )
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


NOT_JSON_CONTENT = "must be JSON, sent as Content-Type: application/json"


def is_json_content_type(value: str | None) -> bool:
    """Whether a request body is read as JSON, as FastAPI reads one (its strict default):
    ``application/json`` or ``application/*+json``, parameters such as charset aside. A body
    with no Content-Type is not (FastAPI's guard against cross-site form posts)."""
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def pydantic_details(errors: list[Any]) -> list[dict[str, str]]:
    details = []
    for err in errors:
        loc = err.get("loc", ())
        # Tagged-union errors carry the tag in the location; it is noise to a client.
        loc = [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
        message = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            details.append({"field": "body", "message": "Body is not valid JSON"})
            continue
        details.append({"field": _loc_to_field(loc), "message": message})
    return details


_STATUS_CODES = {
    # FastAPI's own 400s (a body it could not read) are validation errors like any other.
    400: ("validation_error", "VALIDATION_ERROR"),
    401: ("unauthorized", "UNAUTHORIZED"),
    403: ("forbidden", "FORBIDDEN"),
    404: ("not_found", "NOT_FOUND"),
    405: ("method_not_allowed", "METHOD_NOT_ALLOWED"),
    409: ("conflict", "CONFLICT"),
    413: ("payload_too_large", "PAYLOAD_TOO_LARGE"),
    415: ("unsupported_media_type", "UNSUPPORTED_MEDIA_TYPE"),
}


#: The 401 or 403 the matched route would answer the request, or None (``auth``).
AccessCheck = Callable[[Request], Awaitable[CareflowError | None]]
#: The HTML answer of a request for a page, or None for the API's envelope (``console``).
PageProblem = Callable[[Request, "CareflowError | None", int, str], Response | None]
#: Every method the app answers at a request's path (``routers.allowed_methods``).
AllowedMethods = Callable[[FastAPI, Scope], Sequence[str]]

# What FastAPI answers, before the route's dependencies run, for a body it could not read
# as text (not UTF-8, say) rather than as JSON.
_UNREADABLE_BODY = "There was an error parsing the body"


def install_error_handlers(
    app: FastAPI,
    *,
    access_problem: AccessCheck,
    allowed_methods: AllowedMethods | None = None,
    page_problem: PageProblem | None = None,
) -> None:
    """One handler per error family. ``access_problem`` is asked before a body FastAPI
    could not read is judged, so the route's role checks keep their precedence;
    ``allowed_methods`` makes a 405's ``Allow`` list every method of the path;
    ``page_problem`` answers a request for a page (the console) in HTML rather than in an
    API family's envelope. The app passes them in, as this module sits below ``auth``, the
    routers and the console."""

    def page_answer(
        request: Request, exc: CareflowError | None, status: int, message: str
    ) -> Response | None:
        return page_problem(request, exc, status, message) if page_problem else None

    @app.exception_handler(CareflowError)
    async def _careflow(request: Request, exc: CareflowError) -> Response:
        page = page_answer(request, exc, exc.status_code, exc.message)
        return page if page is not None else render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        page = page_answer(
            request,
            None,
            400,
            "; ".join(
                f"{d['field']}: {d['message']}" for d in pydantic_details(list(exc.errors()))
            ),
        )
        if page is not None:
            return page
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            # Raised while FastAPI read the body, before the route's role checks ran: a
            # caller without access gets its 401/403, not a verdict on the body.
            problem = await access_problem(request)
            if problem is not None:
                return render(request, problem)
        errors = list(exc.errors())
        if not is_json_content_type(request.headers.get("content-type")) and any(
            err.get("loc", ())[:1] == ("body",) for err in errors
        ):
            # FastAPI left a body of another content type unread, and the model then saw
            # bytes: say what is wrong with the request, not with the bytes.
            errors = [e for e in errors if e.get("loc", ())[:1] != ("body",)]
            details = [{"field": "body", "message": NOT_JSON_CONTENT}, *pydantic_details(errors)]
            return render(request, ValidationError(details=details))
        return render(request, ValidationError(details=pydantic_details(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code in (404, 405):
            page = page_answer(request, None, exc.status_code, str(exc.detail))
            if page is not None:
                return page
        if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
            # As for a body that is not JSON: no token, or a refused role, outranks the body.
            problem = await access_problem(request)
            if problem is not None:
                return render(request, problem)
        if exc.status_code == 405 and allowed_methods is not None:
            allowed = allowed_methods(request.app, request.scope)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        code, pcode = _STATUS_CODES.get(exc.status_code, ("error", "ERROR"))
        message = exc.detail if isinstance(exc.detail, str) else code
        body = error_body(
            request.url.path,
            exc.status_code,
            code,
            pcode,
            message,
            [],
            request_id=request_id_of(request.scope),
        )
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeoutError

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            import structlog

            structlog.get_logger("careflow.http").warning(
                "database_unavailable", path=request.url.path, error_type=type(exc).__name__
            )
            return render(request, ServiceUnavailableError())
        return await _unhandled(request, exc)

    for database_error in (DBAPIError, DisconnectionError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(database_error, _database)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        import structlog

        # Runs outside the request-id middleware (Starlette's outermost layer), so the id
        # comes from the scope the middleware tagged.
        request_id = request_id_of(request.scope)
        structlog.get_logger("careflow.http").error(
            "unhandled_error",
            path=request.url.path,
            error_type=type(exc).__name__,
            origin=error_origin(exc),
            request_id=request_id,
        )
        body = error_body(
            request.url.path,
            500,
            "internal_error",
            "INTERNAL_ERROR",
            "Internal server error",
            [],
            request_id=request_id,
        )
        headers = {"X-Request-ID": request_id} if request_id else None
        return JSONResponse(body, status_code=500, headers=headers)


def error_origin(exc: BaseException) -> str | None:
    """Where an exception was raised (file:line in function): no values, so no patient data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
