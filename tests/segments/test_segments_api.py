from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.actions.registry import EXECUTORS
from careflow.config import Settings
from careflow.kit.clock import FrozenClock
from tests.fixtures.factories import create_execution, make_context

Auth = Callable[..., dict[str, str]]


async def add_members(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: FrozenClock,
    patients: list[Any],
    *,
    segment_id: int = 7,
    org: int = 1,
) -> None:
    """Members as the engine adds them: through the ``update_segment`` executor."""
    config = {"type": "update_segment", "segment_id": segment_id, "action": "add"}
    async with maker() as session:
        for patient_id in patients:
            execution = await create_execution(
                session, org=org, patient_id=patient_id, now=clock.now()
            )
            ctx = make_context(
                session,
                settings=settings,
                clock=clock,
                services={},
                execution=execution,
                config=config,
            )
            assert (await EXECUTORS["update_segment"].execute(ctx)).status == "success"
            clock.advance(minutes=1)
        await session.commit()


class TestSegmentMembers:
    async def test_members_oldest_first_with_page_meta(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: FrozenClock,
    ) -> None:
        await add_members(maker, settings, clock, [100, "p-2", 102])
        await add_members(maker, settings, clock, [999], segment_id=8)
        await add_members(maker, settings, clock, [555], org=2)

        r = await client.get("/v1/segments/7/members", headers=auth("specialist"))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "data": [
                {"patient_id": 100, "added_at": "2025-02-15T10:00:00Z"},
                {"patient_id": "p-2", "added_at": "2025-02-15T10:01:00Z"},
                {"patient_id": 102, "added_at": "2025-02-15T10:02:00Z"},
            ],
            "meta": {"total": 3, "page": 1, "limit": 20},
        }

        r = await client.get("/v1/segments/7/members?page=2&limit=2", headers=auth("admin"))
        assert r.json()["data"] == [{"patient_id": 102, "added_at": "2025-02-15T10:02:00Z"}]
        assert r.json()["meta"] == {"total": 3, "page": 2, "limit": 2}

    async def test_unknown_segment_is_an_empty_page(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/segments/12345/members", headers=auth())
        assert r.status_code == 200
        assert r.json() == {"data": [], "meta": {"total": 0, "page": 1, "limit": 20}}

    async def test_removed_members_are_gone(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: FrozenClock,
    ) -> None:
        await add_members(maker, settings, clock, [100, 101])
        async with maker() as session:
            execution = await create_execution(session, patient_id=100, now=clock.now())
            ctx = make_context(
                session,
                settings=settings,
                clock=clock,
                services={},
                execution=execution,
                config={"type": "update_segment", "segment_id": 7, "action": "remove"},
            )
            assert (await EXECUTORS["update_segment"].execute(ctx)).result[
                "membership"
            ] == "removed"
            await session.commit()
        r = await client.get("/v1/segments/7/members", headers=auth())
        assert [m["patient_id"] for m in r.json()["data"]] == [101]

    @pytest.mark.parametrize(
        ("role", "status"), [("service", 403), ("patient", 403), ("support", 403)]
    )
    async def test_only_staff(
        self, client: httpx.AsyncClient, auth: Auth, role: str, status: int
    ) -> None:
        r = await client.get("/v1/segments/7/members", headers=auth(role))
        assert r.status_code == status
        assert r.json()["error"]["code"] == "forbidden"

    async def test_bad_segment_id_is_a_validation_error(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/segments/abc/members", headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"
