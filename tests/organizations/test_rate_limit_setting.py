"""``actions_per_second`` in /v1/organization/settings: none by default, validated, stored
and shown; a value written by hand out of range is no limit."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock
from careflow.organizations.models import OrganizationSettings
from careflow.organizations.service import action_rate_limits

Auth = Callable[..., dict[str, str]]
URL = "/v1/organization/settings"


class TestActionsPerSecond:
    async def test_no_limit_by_default_then_set_then_back(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        data = (await client.get(URL, headers=auth())).json()["data"]
        assert data["actions_per_second"] is None

        r = await client.put(URL, json={"actions_per_second": 2.5}, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["data"]["actions_per_second"] == 2.5
        data = (await client.get(URL, headers=auth())).json()["data"]
        assert (data["actions_per_second"], data["overrides"]["actions_per_second"]) == (2.5, 2.5)

        r = await client.put(URL, json={"actions_per_second": 40}, headers=auth())
        assert r.json()["data"]["actions_per_second"] == 40

        r = await client.put(URL, json={"actions_per_second": None}, headers=auth())
        assert r.json()["data"]["actions_per_second"] is None

    @pytest.mark.parametrize("value", [0, -1, 0.001, 1_000_001, "5", True, [], {"rate": 1}])
    async def test_bad_values_are_400(
        self, client: httpx.AsyncClient, auth: Auth, value: object
    ) -> None:
        r = await client.put(URL, json={"actions_per_second": value}, headers=auth())
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "validation_error"

    async def test_only_an_admin_sets_it(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.put(URL, json={"actions_per_second": 1}, headers=auth("specialist"))
        assert r.status_code == 403

    async def test_each_organisation_has_its_own(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await client.put(URL, json={"actions_per_second": 3}, headers=auth(org=1))
        data = (await client.get(URL, headers=auth(org=2))).json()["data"]
        assert data["actions_per_second"] is None
        async with create_sessionmaker(engine)() as session, session.begin():
            # Written by hand past the API's checks: no limit rather than a stalled queue.
            session.add(
                OrganizationSettings(
                    organization_id=3, updated_at=clock.now(), actions_per_second=0
                )
            )
        async with create_sessionmaker(engine)() as session:
            assert await action_rate_limits(session) == {1: 3.0}
