from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.audit.models import AuditEntry
from careflow.entities.models import Entity
from careflow.events.models import Event
from careflow.forms.models import Form, FormStatus
from careflow.jobs.models import Job
from careflow.kit.clock import FrozenClock
from tests.fixtures.factories import create_execution, create_form

Auth = Callable[..., dict[str, str]]


async def seed(maker: async_sessionmaker[AsyncSession], **kwargs: Any) -> Form:
    async with maker() as session:
        form = await create_form(session, **kwargs)
        await session.commit()
        return form


class TestListForms:
    async def test_newest_first_with_page_meta(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        older = await seed(maker, now=clock.now() - timedelta(hours=1))
        newer = await seed(maker, now=clock.now(), form_template_id=43, patient_id="p-7")
        r = await client.get("/v1/forms", headers=auth("admin"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert [f["id"] for f in body["data"]] == [newer.id, older.id]
        assert body["meta"] == {"total": 2, "page": 1, "limit": 20}
        assert body["data"][0] == {
            "id": newer.id,
            "patient_id": "p-7",
            "form_template_id": 43,
            "blocking": True,
            "description": "Privacy Policy & GDPR Consent",
            "status": "pending",
            "execution_id": None,
            "created_at": "2025-02-15T10:00:00Z",
            "completed_at": None,
        }
        assert body["data"][1]["patient_id"] == 100

    async def test_filters_by_patient_and_status(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        pending = await seed(maker, now=clock.now(), patient_id=100)
        done = await seed(
            maker, now=clock.now(), patient_id=100, form_template_id=43, status="completed"
        )
        await seed(maker, now=clock.now(), patient_id=101)
        r = await client.get("/v1/forms?patient_id=100", headers=auth("specialist"))
        assert {f["id"] for f in r.json()["data"]} == {pending.id, done.id}
        r = await client.get(
            "/v1/forms", params={"patient_id": "100", "status": "completed"}, headers=auth()
        )
        assert [f["id"] for f in r.json()["data"]] == [done.id]
        assert r.json()["meta"]["total"] == 1

    async def test_pages(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        for i in range(3):
            await seed(maker, now=clock.now() + timedelta(minutes=i), patient_id=i)
        r = await client.get("/v1/forms?page=2&limit=2", headers=auth("service"))
        assert r.status_code == 200
        assert [f["patient_id"] for f in r.json()["data"]] == [0]
        assert r.json()["meta"] == {"total": 3, "page": 2, "limit": 2}

    async def test_bad_status_is_a_validation_error(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/forms?status=signed", headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    async def test_only_the_callers_organisation(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        await seed(maker, now=clock.now(), org=2)
        r = await client.get("/v1/forms", headers=auth("admin", org=1))
        assert r.json() == {"data": [], "meta": {"total": 0, "page": 1, "limit": 20}}


class TestGetForm:
    async def test_get(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            form = await create_form(
                session, now=clock.now(), execution_id=execution.id, action_index=0
            )
            await session.commit()
        r = await client.get(f"/v1/forms/{form.id}", headers=auth("service"))
        assert r.status_code == 200
        assert r.json()["data"]["id"] == form.id
        assert r.json()["data"]["execution_id"] == execution.id

    async def test_missing_and_foreign_forms_are_not_found(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        theirs = await seed(maker, now=clock.now(), org=2)
        for form_id in (theirs.id, 999_999):
            r = await client.get(f"/v1/forms/{form_id}", headers=auth("admin", org=1))
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "form_not_found"
            r = await client.post(f"/v1/forms/{form_id}/complete", headers=auth("admin", org=1))
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "form_not_found"


class TestCompleteForm:
    async def test_completes_audits_and_emits_form_completed(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        form = await seed(maker, now=clock.now() - timedelta(days=1), patient_id="p-1")
        r = await client.post(
            f"/v1/forms/{form.id}/complete", headers=auth("service", sub="svc_host")
        )
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["status"] == "completed"
        assert data["completed_at"] == "2025-02-15T10:00:00Z"

        async with maker() as session:
            row = await session.get(Form, form.id)
            assert row is not None and row.status == FormStatus.COMPLETED

            [event] = (await session.execute(select(Event))).scalars().all()
            assert event.organization_id == 1
            assert event.type == "form.completed"
            assert event.event_id == f"form-completed:{form.id}"
            assert event.occurred_at == clock.now()
            assert event.data["patient"] == {"id": "p-1"}
            assert event.data["form"]["id"] == form.id
            assert event.data["form"]["form_template_id"] == 42
            assert event.data["form"]["patient_id"] == "p-1"
            assert event.data["form"]["status"] == "completed"

            # The form's snapshot is kept like any producer's, for rules that read form.*.
            snapshot = await session.scalar(
                select(Entity).where(Entity.entity_type == "form", Entity.entity_id == form.id)
            )
            assert snapshot is not None and snapshot.data["status"] == "completed"

            [job] = (await session.execute(select(Job))).scalars().all()
            assert job.kind == "dispatch_event"
            assert job.payload == {"event_id": event.id}
            assert job.organization_id == 1
            assert job.dedupe_key == f"dispatch:{event.id}"
            assert job.run_at == clock.now()

            [entry] = (await session.execute(select(AuditEntry))).scalars().all()
            assert (entry.object_type, entry.object_id, entry.action) == (
                "form",
                str(form.id),
                "complete",
            )
            assert (entry.actor_sub, entry.actor_role) == ("svc_host", "service")
            assert entry.before == {"status": "pending", "completed_at": None}
            assert entry.after == {"status": "completed", "completed_at": "2025-02-15T10:00:00Z"}
            assert entry.request_id == r.headers["x-request-id"]

    async def test_completing_twice_is_a_conflict(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
    ) -> None:
        form = await seed(maker, now=clock.now())
        first = await client.post(f"/v1/forms/{form.id}/complete", headers=auth())
        assert first.status_code == 200
        second = await client.post(f"/v1/forms/{form.id}/complete", headers=auth())
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "form_already_completed"
        async with maker() as session:
            assert len((await session.execute(select(Event))).scalars().all()) == 1
            assert len((await session.execute(select(Job))).scalars().all()) == 1


class TestAccess:
    @pytest.mark.parametrize(
        ("role", "read", "complete"),
        [
            ("admin", 200, 200),
            ("specialist", 200, 403),
            ("service", 200, 200),
            ("patient", 403, 403),
            ("support", 403, 403),
        ],
    )
    async def test_roles(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        role: str,
        read: int,
        complete: int,
    ) -> None:
        form = await seed(maker, now=clock.now())
        headers = auth(role)
        assert (await client.get("/v1/forms", headers=headers)).status_code == read
        assert (await client.get(f"/v1/forms/{form.id}", headers=headers)).status_code == read
        assert (await client.get("/v1/patients/100/gate", headers=headers)).status_code == read
        r = await client.post(f"/v1/forms/{form.id}/complete", headers=headers)
        assert r.status_code == complete
        if complete == 403:
            assert r.json()["error"]["code"] == "forbidden"

    async def test_no_token(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/forms")).status_code == 401
        assert (await client.get("/v1/patients/1/gate")).status_code == 401
