"""A path segment that cannot be a careflow id names no row: 404 ``<thing>_not_found``.

Automation rules and episodes always answered so; executions, the rule test endpoint,
forms and events answered FastAPI's 400 about the parameter's type instead (and a number
past 64 bits a 400 about its range). Seed 000: ``404 execution_not_found``,
``404 automation_rule_not_found``; SPEC §3: ``<thing>_not_found`` for the other resources.
"""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import Auth

BAD_IDS = ["abc", "0", "-1", "1.5", "99999999999999999999999", "%C2%B2"]
TEST_BODY = {"trigger_entity_type": "patient", "trigger_entity_id": 100}

# (method, path template, code, role allowed on the route)
ROUTES = [
    ("GET", "/v1/automations/executions/{id}", "execution_not_found", "specialist"),
    ("POST", "/v1/automations/executions/{id}/retry", "execution_not_found", "admin"),
    ("POST", "/v1/automations/rules/{id}/test", "automation_rule_not_found", "admin"),
    ("GET", "/v1/automations/rules/{id}", "automation_rule_not_found", "specialist"),
    ("GET", "/v1/forms/{id}", "form_not_found", "service"),
    ("POST", "/v1/forms/{id}/complete", "form_not_found", "service"),
    ("GET", "/v1/events/{id}", "event_not_found", "service"),
    ("GET", "/v1/episodes/{id}", "episode_not_found", "specialist"),
]


@pytest.mark.parametrize(("method", "template", "code", "role"), ROUTES)
@pytest.mark.parametrize("bad", BAD_IDS)
async def test_unparseable_id_is_not_found(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    template: str,
    code: str,
    role: str,
    bad: str,
) -> None:
    path = template.format(id=bad)
    kwargs = {"json": TEST_BODY} if path.endswith("/test") else {}
    r = await client.request(method, path, headers=auth(role), **kwargs)
    assert r.status_code == 404, r.text
    assert r.json() == {
        "error": {"code": code, "message": r.json()["error"]["message"], "details": []}
    }


@pytest.mark.parametrize(("method", "template", "code", "role"), ROUTES)
async def test_role_checks_come_first(
    client: httpx.AsyncClient, auth: Auth, method: str, template: str, code: str, role: str
) -> None:
    path = template.format(id="abc")
    r = await client.request(method, path)
    assert r.status_code == 401
    r = await client.request(method, path, headers=auth("support"))
    assert r.status_code == 403


async def test_openapi_still_documents_integer_ids(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/v1/automations/executions/{id}", "get"),
        ("/v1/forms/{form_id}", "get"),
        ("/v1/events/{id}", "get"),
        ("/v1/automations/rules/{id}/test", "post"),
    ):
        (param,) = [p for p in spec["paths"][path][method]["parameters"] if p["in"] == "path"]
        assert param["schema"]["type"] == "integer", (path, param)


@pytest.mark.parametrize("spelling", ["0{id}", "{id}%0A", "%20{id}", "+{id}"])
async def test_another_spelling_of_a_real_id_names_no_rule(
    client: httpx.AsyncClient, auth: Auth, spelling: str
) -> None:
    """Only the id as careflow wrote it names the rule: not with a leading zero or sign, and
    not with a trailing newline (which a ``$``-anchored pattern lets through)."""
    body = {
        "name": "Welcome",
        "trigger_event": "patient.onboarded",
        "actions": [{"type": "send_email", "template": "welcome_patient"}],
    }
    created = await client.post("/v1/automations/rules", json=body, headers=auth("admin"))
    assert created.status_code == 201, created.text
    rule_id = created.json()["data"]["id"]
    path = "/v1/automations/rules/" + spelling.format(id=rule_id)
    for method, kwargs in (("GET", {}), ("PUT", {"json": {"name": "Renamed"}}), ("DELETE", {})):
        r = await client.request(method, path, headers=auth("admin"), **kwargs)
        assert r.status_code == 404, (method, r.text)
        assert r.json()["error"]["code"] == "automation_rule_not_found"
    kept = await client.get(f"/v1/automations/rules/{rule_id}", headers=auth("admin"))
    assert kept.json()["data"]["name"] == "Welcome"
