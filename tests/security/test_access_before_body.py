"""A body that is not JSON never outranks the role checks (SPEC §2, §3).

FastAPI reads a JSON body before it runs a route's dependencies, so without care a caller
with no token, or with a role the route refuses, would get a 400 about the body instead of
its 401/403. Every route with a body is checked in both families; an allowed caller still
gets the 400 of its family.
"""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import Auth

NOT_JSON = b"{not json"
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
    ("POST", "/v1/pathway-rules", "specialist"),
    ("PATCH", "/v1/pathway-rules/rule_00000000-0000-0000-0000-000000000000", "specialist"),
    ("POST", "/v1/pathway-rules/resolve", "support"),
    ("PUT", "/v1/pathway-configs/appointment.booked", "specialist"),
]


def _code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


def _pathway(path: str) -> bool:
    return path.startswith("/v1/pathway-")


@pytest.mark.parametrize(("method", "path", "refused"), ROUTES)
async def test_not_json_answers_401_403_before_400(
    client: httpx.AsyncClient, auth: Auth, method: str, path: str, refused: str
) -> None:
    pathway = _pathway(path)

    r = await client.request(method, path, content=NOT_JSON, headers=HEADERS)
    assert r.status_code == 401, r.text
    assert _code(r) == ("UNAUTHORIZED" if pathway else "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["x-request-id"]
    if pathway:
        assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]

    r = await client.request(method, path, content=NOT_JSON, headers={**HEADERS, **auth(refused)})
    assert r.status_code == 403, r.text
    assert _code(r) == ("FORBIDDEN" if pathway else "forbidden")

    r = await client.request(method, path, content=NOT_JSON, headers={**HEADERS, **auth()})
    assert r.status_code == 400, r.text
    assert _code(r) == ("VALIDATION_ERROR" if pathway else "validation_error")
