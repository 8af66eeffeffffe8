"""Every pathway-family error carries the request's id in ``meta``, whoever answers it: the
error handlers, the body-size guard and the NUL guard read it from the request scope the
request-id middleware tagged."""

from __future__ import annotations

import httpx

from careflow.config import Settings
from tests.security.conftest import Auth

GIVEN = {"X-Request-ID": "req_errors_carry_it"}


def assert_meta(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert body["meta"] == {"request_id": "req_errors_carry_it"}
    assert r.headers["x-request-id"] == "req_errors_carry_it"


class TestPathwayErrorsCarryTheRequestId:
    async def test_a_careflow_error(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get("/v1/pathway-rules/rule_missing", headers={**auth(), **GIVEN})
        assert_meta(r, 404, "NOT_FOUND")

    async def test_a_body_that_is_not_json(self, client: httpx.AsyncClient, auth: Auth) -> None:
        headers = {**auth(), **GIVEN, "Content-Type": "application/json"}
        r = await client.post("/v1/pathway-rules", content=b"{", headers=headers)
        assert_meta(r, 400, "VALIDATION_ERROR")

    async def test_a_method_the_route_lacks(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.patch("/v1/pathway-rules", headers={**auth(), **GIVEN})
        assert_meta(r, 405, "METHOD_NOT_ALLOWED")

    async def test_a_body_over_the_limit(
        self, client: httpx.AsyncClient, auth: Auth, settings: Settings
    ) -> None:
        body = b"x" * (settings.max_body_bytes + 1)
        headers = {**auth(), **GIVEN, "Content-Type": "application/json"}
        r = await client.post("/v1/pathway-rules", content=body, headers=headers)
        assert_meta(r, 413, "PAYLOAD_TOO_LARGE")

    async def test_a_nul_in_the_path(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get("/v1/pathway-rules/rule_%00", headers={**auth(), **GIVEN})
        assert_meta(r, 400, "VALIDATION_ERROR")


class TestAccessBeforeBody:
    async def test_the_access_check_the_app_passes_in_answers_first(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        headers = {**auth("patient"), **GIVEN, "Content-Type": "application/json"}
        r = await client.post("/v1/pathway-rules", content=b"{", headers=headers)
        assert_meta(r, 403, "FORBIDDEN")
