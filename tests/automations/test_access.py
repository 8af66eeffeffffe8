"""Who may call what (the seed's access matrix, SPEC §2), bad tokens, and tenancy."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from careflow.config import Settings
from tests.fixtures.factories import RULES, create_rule, rule_body

Auth = Callable[..., dict[str, str]]

ROLES = ("admin", "specialist", "patient", "support", "service")
READ = {"admin", "specialist"}
WRITE = {"admin"}

# (method, path, body, roles allowed, success status). "{id}" is an existing rule of org 1.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, set[str], int]] = [
    ("GET", "/v1/automations/rules", None, READ, 200),
    ("GET", "/v1/automations/rules/{id}", None, READ, 200),
    ("POST", "/v1/automations/rules", rule_body(), WRITE, 201),
    ("PUT", "/v1/automations/rules/{id}", {"name": "Renamed"}, WRITE, 200),
    ("DELETE", "/v1/automations/rules/{id}", None, WRITE, 204),
    ("GET", "/v1/automations/triggers", None, READ, 200),
    ("GET", "/v1/automations/actions", None, READ, 200),
]

# Endpoints of the Automations API written in other modules (rule test, executions). Their
# success statuses are what an allowed caller gets with no entity or execution stored: past
# the role check, the resource is simply missing.
OTHER_AUTOMATIONS_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, set[str], int]] = [
    (
        "POST",
        "/v1/automations/rules/{id}/test",
        {"trigger_entity_type": "patient", "trigger_entity_id": 100},
        WRITE,
        404,
    ),
    ("GET", "/v1/automations/executions", None, READ, 200),
    ("GET", "/v1/automations/executions/999", None, READ, 404),
    ("POST", "/v1/automations/executions/999/retry", None, WRITE, 404),
]

MATRIX = [
    pytest.param(
        method, path, body, role, ok if role in allowed else 403, id=f"{role} {method} {path}"
    )
    for method, path, body, allowed, ok in [*ENDPOINTS, *OTHER_AUTOMATIONS_ENDPOINTS]
    for role in ROLES
]


class TestAccessMatrix:
    @pytest.mark.parametrize(("method", "path", "body", "role", "status"), MATRIX)
    async def test_role_on_endpoint(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        role: str,
        status: int,
    ) -> None:
        rule = await create_rule(client, auth)
        url = path.replace("{id}", str(rule["id"]))
        r = await client.request(method, url, json=body, headers=auth(role))
        assert r.status_code == status, r.text
        if status == 403:
            assert r.json()["error"]["code"] == "forbidden"
            # A refused write leaves the rule as it was.
            got = await client.get(f"{RULES}/{rule['id']}", headers=auth())
            assert got.json()["data"] == rule

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [(m, p, b) for m, p, b, _, _ in [*ENDPOINTS, *OTHER_AUTOMATIONS_ENDPOINTS]],
    )
    async def test_no_token_is_401_everywhere(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        r = await client.request(method, path.replace("{id}", "1"), json=body)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"

    async def test_malformed_body_from_anonymous_caller_is_still_401(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        headers = {"Content-Type": "application/json"}
        r = await client.post(RULES, content=b"{oops", headers=headers)
        assert r.status_code == 401
        r = await client.post(RULES, content=b"{oops", headers={**headers, **auth("patient")})
        assert r.status_code == 403


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "usr_1",
        "org_id": 1,
        "role": "admin",
        "exp": int(time.time()) + 600,
    }
    for key, value in overrides.items():
        if value is _DROP:
            claims.pop(key)
        else:
            claims[key] = value
    return claims


_DROP = object()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` and an empty signature, made by hand."""
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _signed(settings: Settings, **overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), settings.jwt_secret, algorithm="HS256")


BAD_TOKENS: dict[str, Callable[[Settings], str]] = {
    "another scheme": lambda s: "Basic dXNlcjpwYXNz",
    "bearer without token": lambda s: "Bearer ",
    "garbage": lambda s: "Bearer not-a-jwt",
    "wrong signature": lambda s: (
        "Bearer " + jwt.encode(_claims(), "another-secret-that-is-long-enough!!", algorithm="HS256")
    ),
    "alg none": lambda s: "Bearer " + _unsigned(_claims()),
    "expired": lambda s: "Bearer " + _signed(s, exp=int(time.time()) - 60),
    "missing sub": lambda s: "Bearer " + _signed(s, sub=_DROP),
    "missing org_id": lambda s: "Bearer " + _signed(s, org_id=_DROP),
    "missing role": lambda s: "Bearer " + _signed(s, role=_DROP),
    "missing exp": lambda s: "Bearer " + _signed(s, exp=_DROP),
    "unknown role": lambda s: "Bearer " + _signed(s, role="superuser"),
    "org_id a string": lambda s: "Bearer " + _signed(s, org_id="1"),
    "org_id a float": lambda s: "Bearer " + _signed(s, org_id=1.5),
    "org_id a boolean": lambda s: "Bearer " + _signed(s, org_id=True),
    "empty sub": lambda s: "Bearer " + _signed(s, sub=""),
}


class TestBadTokens:
    @pytest.mark.parametrize("case", list(BAD_TOKENS))
    async def test_bad_token_is_401(
        self, client: httpx.AsyncClient, settings: Settings, case: str
    ) -> None:
        header = BAD_TOKENS[case](settings)
        for method, path, body in (
            ("GET", RULES, None),
            ("POST", RULES, rule_body()),
            ("GET", "/v1/automations/triggers", None),
        ):
            r = await client.request(method, path, json=body, headers={"Authorization": header})
            assert r.status_code == 401, (case, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"

    async def test_the_good_token_of_the_same_shape_passes(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        r = await client.get(RULES, headers={"Authorization": "Bearer " + _signed(settings)})
        assert r.status_code == 200


class TestTenancy:
    async def test_other_org_sees_nothing(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_rule(client, auth, org=1)
        own = await create_rule(client, auth, org=2, name="Org 2 rule")
        url = f"{RULES}/{rule['id']}"

        r = await client.get(url, headers=auth(org=2))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "automation_rule_not_found"
        r = await client.put(url, json={"name": "Hijacked"}, headers=auth(org=2))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "automation_rule_not_found"
        r = await client.delete(url, headers=auth(org=2))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "automation_rule_not_found"

        listed = (await client.get(RULES, headers=auth("specialist", org=2))).json()
        assert [x["id"] for x in listed["data"]] == [own["id"]]
        assert listed["meta"]["total"] == 1
        assert own["organization_id"] == 2

        # Untouched for its owner.
        r = await client.get(url, headers=auth(org=1))
        assert r.json()["data"] == rule

    async def test_answer_for_another_orgs_rule_equals_a_missing_one(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_rule(client, auth, org=1)
        theirs = await client.get(f"{RULES}/{rule['id']}", headers=auth(org=2))
        missing = await client.get(f"{RULES}/{rule['id'] + 1000}", headers=auth(org=2))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()
