"""The OpenAPI document as the API really answers.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters; careflow
answers validation problems with 400 in its family's envelope (SPEC §3) and never 422 for
them. This replaces those entries with the error answers each operation can really give,
derived from the generated operation itself, so a new endpoint is documented without anyone
remembering to:

- 400 when it takes parameters or a body;
- 401 and 403 under ``/v1/`` (every such route needs a bearer token and a role, SPEC §2);
- 404 when its path names an object;
- 413 when it takes a body (``CAREFLOW_MAX_BODY_BYTES``);

each with the error envelope of the path's family. Other codes a route documents itself
with ``responses=`` (409 conflicts, 422 idempotency key reuse, …) keep their description
and get the envelope's schema too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from careflow.errors import is_pathway_path
from careflow.kit.schemas import ErrorEnvelope, PathwayErrorEnvelope

_DESCRIPTIONS = {
    400: "`validation_error`: the request is malformed; `details` name each bad field",
    401: "`unauthorized`: missing or invalid bearer token",
    403: "`forbidden`: the caller's role may not perform this operation",
    404: "`<thing>_not_found`: no such object in the caller's organisation",
    409: "`conflict`",
    413: "`payload_too_large`: the body is over `CAREFLOW_MAX_BODY_BYTES`",
    422: "`idempotency_key_reused`: the Idempotency-Key was used with another body",
}
# What FastAPI writes on its own 422 entry; a route's own 422 has another description.
_FASTAPI_422 = "Validation Error"
_METHODS = ("get", "put", "post", "delete", "patch")


def _error_statuses(path: str, operation: dict[str, Any]) -> set[int]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: set[int] = set()
    if parameters or has_body:
        statuses.add(400)
    if has_body:
        statuses.add(413)
    if any(p.get("in") == "path" for p in parameters):
        statuses.add(404)
    if path.startswith("/v1/"):
        statuses |= {401, 403}
    return statuses


def _add_error_schemas(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorEnvelope, PathwayErrorEnvelope):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[model.__name__] = generated
    # Nothing answers with FastAPI's validation shapes.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _fix_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if responses.get("422", {}).get("description") == _FASTAPI_422:
        del responses["422"]
    declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
    name = PathwayErrorEnvelope.__name__ if is_pathway_path(path) else ErrorEnvelope.__name__
    for status in sorted(_error_statuses(path, operation) | declared):
        entry = responses.setdefault(str(status), {})
        entry.setdefault("description", _DESCRIPTIONS.get(status, "Error"))
        entry["content"] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
        }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    _add_error_schemas(document)
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _fix_operation(path, item[method])
    return document


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) serve the fixed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
