from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.kit.clock import FrozenClock
from tests.fixtures.factories import create_form

Auth = Callable[..., dict[str, str]]


class TestGate:
    async def test_unknown_patient_is_not_blocked(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/patients/100/gate", headers=auth("service"))
        assert r.status_code == 200
        assert r.json() == {"data": {"patient_id": 100, "blocked": False, "pending_forms": []}}

    async def test_patient_id_is_echoed_as_given(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/patients/pat_abc/gate", headers=auth())
        assert r.json()["data"]["patient_id"] == "pat_abc"

    async def test_blocked_until_the_blocking_form_is_completed(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        async with maker() as session:
            blocking = await create_form(session, now=clock.now() - timedelta(minutes=5))
            optional = await create_form(
                session, now=clock.now(), form_template_id=43, blocking=False
            )
            await create_form(session, now=clock.now(), form_template_id=44, status="completed")
            await create_form(session, now=clock.now(), patient_id=101)
            await create_form(session, now=clock.now(), org=2)
            await session.commit()

        r = await client.get("/v1/patients/100/gate", headers=auth("specialist"))
        assert r.status_code == 200
        assert r.json()["data"] == {
            "patient_id": 100,
            "blocked": True,
            "pending_forms": [
                {
                    "id": blocking.id,
                    "form_template_id": 42,
                    "blocking": True,
                    "created_at": "2025-02-15T09:55:00Z",
                },
                {
                    "id": optional.id,
                    "form_template_id": 43,
                    "blocking": False,
                    "created_at": "2025-02-15T10:00:00Z",
                },
            ],
        }

        done = await client.post(f"/v1/forms/{blocking.id}/complete", headers=auth("service"))
        assert done.status_code == 200
        r = await client.get("/v1/patients/100/gate", headers=auth("service"))
        data = r.json()["data"]
        assert data["blocked"] is False
        assert [f["id"] for f in data["pending_forms"]] == [optional.id]

    async def test_another_organisation_does_not_see_the_block(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        async with maker() as session:
            await create_form(session, now=clock.now(), org=1)
            await session.commit()
        r = await client.get("/v1/patients/100/gate", headers=auth("admin", org=2))
        assert r.json()["data"] == {"patient_id": 100, "blocked": False, "pending_forms": []}
