"""Per-organisation SMS quiet hours and hourly cap, set through the API and used at send time."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.actions.send_sms import sms_policy
from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock

Auth = Callable[..., dict[str, str]]
URL = "/v1/organization/settings"


class TestOrganizationSettings:
    async def test_defaults_then_overrides_then_back(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        settings: Settings,
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        r = await client.get(URL, headers=auth())
        assert r.status_code == 200
        assert r.json()["data"]["quiet_hours_start"] == settings.quiet_hours_start
        assert r.json()["data"]["updated_at"] is None

        body = {"quiet_hours_start": 20, "quiet_hours_end": 9, "sms_hourly_limit": 5}
        r = await client.put(URL, json=body, headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["quiet_hours_start"], data["quiet_hours_end"], data["sms_hourly_limit"]) == (
            20,
            9,
            5,
        )
        assert data["overrides"] == body
        assert data["updated_at"].endswith("Z")
        async with create_sessionmaker(engine)() as session:
            policy = await sms_policy(session, settings, 1)
        assert (policy.quiet_hours_start, policy.quiet_hours_end, policy.hourly_limit) == (20, 9, 5)

        r = await client.put(URL, json={"quiet_hours_start": None}, headers=auth())
        assert r.json()["data"]["quiet_hours_start"] == settings.quiet_hours_start
        assert r.json()["data"]["sms_hourly_limit"] == settings.sms_hourly_limit

        audit = (
            await client.get("/v1/audit-log?object_type=organization_settings", headers=auth())
        ).json()
        assert audit["meta"]["total"] == 2

    async def test_other_organisations_keep_their_own(
        self, client: httpx.AsyncClient, auth: Auth, settings: Settings
    ) -> None:
        await client.put(URL, json={"sms_hourly_limit": 1}, headers=auth())
        r = await client.get(URL, headers=auth("admin", org=2))
        assert r.json()["data"]["sms_hourly_limit"] == settings.sms_hourly_limit

    @pytest.mark.parametrize(
        "body",
        [
            {"quiet_hours_start": 24},
            {"quiet_hours_end": -1},
            {"sms_hourly_limit": -5},
            {"quiet_hours_start": "21"},
            {"timezone": "UTC"},
            {"organization_id": 2},
        ],
    )
    async def test_bad_values_are_400(
        self, client: httpx.AsyncClient, auth: Auth, body: dict[str, object]
    ) -> None:
        r = await client.put(URL, json=body, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    @pytest.mark.parametrize(
        ("role", "get", "put"),
        [
            ("admin", 200, 200),
            ("specialist", 200, 403),
            ("patient", 403, 403),
            ("support", 403, 403),
            ("service", 403, 403),
        ],
    )
    async def test_access(
        self, client: httpx.AsyncClient, auth: Auth, role: str, get: int, put: int
    ) -> None:
        assert (await client.get(URL, headers=auth(role))).status_code == get
        r = await client.put(URL, json={"sms_hourly_limit": 3}, headers=auth(role))
        assert r.status_code == put
