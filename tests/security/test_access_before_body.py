"""A body that is not JSON, or not even UTF-8 text, never outranks the role checks (SPEC §2, §3).

FastAPI reads a JSON body before it runs a route's dependencies, so without care a caller
with no token, or with a role the route refuses, would get a 400 about the body instead of
its 401/403. Every route with a body is checked in both families; an allowed caller still
gets the 400 of its family.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.security.conftest import Auth

NOT_JSON = b"{not json"
# Not text at all: FastAPI fails to decode it before it could even try it as JSON.
NOT_UTF8 = b'\xff\xfe{"name": "\xe9"}'
BODIES = pytest.mark.parametrize("body", [NOT_JSON, NOT_UTF8], ids=["not JSON", "not UTF-8"])
HEADERS = {"Content-Type": "application/json"}

# (method, path, a role the route refuses)
ROUTES = [
    ("POST", "/v1/automations/rules", "specialist"),
    ("PUT", "/v1/automations/rules/1", "specialist"),
    ("POST", "/v1/automations/rules/1/test", "specialist"),
    ("POST", "/v1/events", "specialist"),
    ("PUT", "/v1/entities/patient/1", "specialist"),
    ("PATCH", "/v1/episodes/1", "patient"),
    ("PUT", "/v1/templates/email/custom_key", "specialist"),
    ("PUT", "/v1/organization/settings", "specialist"),
    ("PUT", "/v1/patients/100/preferences", "specialist"),
    ("POST", "/v1/pathway-rules", "specialist"),
    ("PATCH", "/v1/pathway-rules/rule_00000000-0000-0000-0000-000000000000", "specialist"),
    ("POST", "/v1/pathway-rules/resolve", "support"),
    ("PUT", "/v1/pathway-configs/appointment.booked", "specialist"),
]


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _pathway(path: str) -> bool:
    return path.startswith("/v1/pathway-")


def _path_pattern(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


async def test_every_route_with_a_body_is_listed(client: httpx.AsyncClient) -> None:
    """The table above holds every operation the API document gives a request body."""
    document = (await client.get("/openapi.json")).json()
    with_body = {
        (method.upper(), _path_pattern(path))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    missing = {
        (method, pattern)
        for method, pattern in with_body
        if not any(
            m == method and re.fullmatch(pattern.replace("{}", "[^/]+"), path)
            for m, path, _ in ROUTES
        )
    }
    assert not missing, missing


@BODIES
@pytest.mark.parametrize(("method", "path", "refused"), ROUTES)
async def test_unreadable_body_answers_401_403_before_400(
    client: httpx.AsyncClient, auth: Auth, method: str, path: str, refused: str, body: bytes
) -> None:
    pathway = _pathway(path)

    r = await client.request(method, path, content=body, headers=HEADERS)
    assert r.status_code == 401, r.text
    assert _code(r) == ("UNAUTHORIZED" if pathway else "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["x-request-id"]
    if pathway:
        assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]

    r = await client.request(method, path, content=body, headers={**HEADERS, **auth(refused)})
    assert r.status_code == 403, r.text
    assert _code(r) == ("FORBIDDEN" if pathway else "forbidden")

    r = await client.request(method, path, content=body, headers={**HEADERS, **auth()})
    assert r.status_code == 400, r.text
    assert _code(r) == ("VALIDATION_ERROR" if pathway else "validation_error")
