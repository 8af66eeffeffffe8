"""When the database is out of reach, clients get 503 with Retry-After, not 500."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from careflow.app import create_app
from careflow.db import create_engine
from tests.conftest import make_settings
from tests.fixtures.smtp import free_port

Auth = Callable[..., dict[str, str]]


class TestDatabaseUnavailable:
    async def test_requests_get_503_in_their_family_envelope(self, auth: Auth) -> None:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
        engine = create_engine(url, pool_pre_ping=False)
        app = create_app(make_settings(url), engine=engine, migrate_sqlite=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post(
                    "/v1/events",
                    json={"type": "patient.onboarded", "data": {"patient": {"id": 1}}},
                    headers=auth("service"),
                )
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "service_unavailable"
                assert r.headers["retry-after"] == "5"
                assert r.headers["x-request-id"]

                r = await client.get("/v1/pathway-rules", headers=auth("admin"))
                assert r.status_code == 503
                assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]

                assert (await client.get("/readyz")).status_code == 503
                assert (await client.get("/healthz")).status_code == 200
        finally:
            await engine.dispose()
