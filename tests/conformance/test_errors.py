"""Errors at the door (SPEC §2, §10): 401s in both families, unknown routes, wrong methods,
oversized and malformed requests, and authentication and role checks before the body is read.
"""

from __future__ import annotations

import time

import jwt
import pytest

from tests.conformance.envelopes import auto_error, body, describe, pathway_error
from tests.conformance.server import JWT_SECRET, Api, Serve, cli_token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestUnauthorized:
    def test_token_from_the_cli_is_accepted(self, api: Api, serve: Serve) -> None:
        token = cli_token(serve.env, 1, "specialist", "usr_cli")
        r = api("GET", "/v1/automations/rules", role=None, headers=bearer(token))
        assert r.status_code == 200, describe(r)

    def test_automations_401_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", role=None)
        assert auto_error(r, 401, "unauthorized"), describe(r)

    def test_pathway_401_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules", role=None)
        assert pathway_error(r, 401, "UNAUTHORIZED"), describe(r)

    def test_malformed_token(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", role=None, headers=bearer("x.y.z"))
        assert r.status_code == 401, r.status_code

    def test_alg_none_token(self, api: Api) -> None:
        claims = {"sub": "u", "org_id": 1, "role": "admin", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, key="", algorithm="none")
        r = api("GET", "/v1/automations/rules", role=None, headers=bearer(token))
        assert r.status_code == 401, r.status_code

    def test_expired_token(self, api: Api) -> None:
        claims = {"sub": "u", "org_id": 1, "role": "admin", "exp": int(time.time()) - 60}
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        r = api("GET", "/v1/automations/rules", role=None, headers=bearer(token))
        assert r.status_code == 401, r.status_code

    def test_unknown_role(self, api: Api) -> None:
        claims = {"sub": "u", "org_id": 1, "role": "root", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        r = api("GET", "/v1/automations/rules", role=None, headers=bearer(token))
        assert r.status_code == 401, r.status_code


class TestUnknownRoutes:
    def test_unknown_route_404_envelope_and_request_id(self, api: Api) -> None:
        r = api("GET", "/v1/nothing-here")
        code = ((body(r) or {}).get("error") or {}).get("code", "?")
        assert r.status_code == 404 and auto_error(r, 404, code), describe(r)

    def test_unknown_pathway_route_pathway_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules/a/b/c")
        assert pathway_error(r, 404, "NOT_FOUND"), describe(r)

    def test_wrong_method_405_envelope_and_request_id(self, api: Api) -> None:
        r = api("DELETE", "/v1/automations/triggers")
        assert (
            r.status_code == 405 and "error" in (body(r) or {}) and r.headers.get("x-request-id")
        ), describe(r)

    def test_wrong_method_carries_allow_header(self, api: Api) -> None:
        r = api("DELETE", "/v1/automations/triggers")
        assert "GET" in r.headers.get("allow", ""), dict(r.headers)

    def test_wrong_method_on_pathway_path_pathway_envelope(self, api: Api) -> None:
        r = api("PUT", "/v1/pathway-rules")
        assert pathway_error(r, 405, "METHOD_NOT_ALLOWED"), describe(r)


class TestMalformedRequests:
    def test_oversized_body_413(self, api: Api) -> None:
        r = api(
            "POST",
            "/v1/events",
            role="service",
            content=b"{" + b" " * 1_100_000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert auto_error(r, 413, "payload_too_large"), describe(r)

    def test_nul_in_query_400_pathway_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules", params={"trigger_type": "a\x00b"})
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_pathway_limit_not_a_number_is_400_never_422(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules", params={"limit": "abc"})
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_automations_enabled_not_a_boolean_is_400_never_422(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", params={"enabled": "maybe"})
        assert auto_error(r, 400, "validation_error"), describe(r)


WRITES = [
    ("POST", "/v1/automations/rules"),
    ("POST", "/v1/automations/rules/1/test"),
    ("POST", "/v1/events"),
    ("PUT", "/v1/entities/patient/1"),
    ("PATCH", "/v1/episodes/1"),
    ("PUT", "/v1/templates/email/x"),
    ("PUT", "/v1/organization/settings"),
    ("POST", "/v1/pathway-rules/resolve"),
    ("PUT", "/v1/pathway-configs/appointment.booked"),
    ("PATCH", "/v1/pathway-rules/rule_00000000-0000-0000-0000-000000000000"),
]
NOT_JSON = {"content": b"{bad", "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_anonymous_non_json_write_is_401(api: Api, method: str, path: str) -> None:
    r = api(method, path, role=None, **NOT_JSON)
    assert r.status_code == 401, describe(r)


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_patient_non_json_write_is_403(api: Api, method: str, path: str) -> None:
    r = api(method, path, role="patient", **NOT_JSON)
    assert r.status_code == 403, describe(r)
