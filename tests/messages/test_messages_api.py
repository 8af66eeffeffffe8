from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.executions.models import Execution
from careflow.messages.models import Message
from careflow.messages.repository import get_for_action, new_message_id
from tests.conftest import T0

Auth = Callable[..., dict[str, str]]


async def create_execution(engine: AsyncEngine, org: int = 1, **overrides: Any) -> int:
    values: dict[str, Any] = {
        "organization_id": org,
        "automation_rule_name": "Welcome",
        "rule_version": 1,
        "trigger_event": "patient.onboarded",
        "trigger_entity_type": "patient",
        "trigger_entity_id": 100,
        "patient_id": 100,
        "occurrence_key": f"occ-{new_message_id('sms')}",
        "status": "success",
        "actions": [{"type": "send_email", "template": "welcome_patient"}],
        "executed_at": T0,
    }
    values.update(overrides)
    async with create_sessionmaker(engine)() as session, session.begin():
        execution = Execution(**values)
        session.add(execution)
        await session.flush()
        return execution.id


async def create_message(engine: AsyncEngine, org: int = 1, **overrides: Any) -> Message:
    channel = overrides.get("channel", "email")
    values: dict[str, Any] = {
        "id": new_message_id(channel),
        "organization_id": org,
        "channel": channel,
        "patient_id": 100,
        "recipient": "pat@example.com" if channel == "email" else "+15550100",
        "template": "welcome_patient",
        "subject": "Welcome" if channel == "email" else None,
        "body": "Hello there",
        "status": "sent",
        "provider": "smtp" if channel == "email" else "twilio",
        "provider_message_id": "pm-1",
        "error": None,
        "attempts": 1,
        "created_at": T0,
        "sent_at": T0,
    }
    values.update(overrides)
    async with create_sessionmaker(engine)() as session, session.begin():
        message = Message(**values)
        session.add(message)
    return message


class TestListMessages:
    async def test_newest_first_without_bodies(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        execution_id = await create_execution(engine)
        old = await create_message(engine, created_at=T0 - timedelta(hours=2))
        new = await create_message(
            engine,
            channel="sms",
            execution_id=execution_id,
            action_index=1,
            created_at=T0,
        )

        r = await client.get("/v1/messages", headers=auth("specialist"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"] == {"total": 2, "page": 1, "limit": 20}
        assert [m["id"] for m in body["data"]] == [new.id, old.id]
        first = body["data"][0]
        assert first == {
            "id": new.id,
            "channel": "sms",
            "recipient": "+15550100",
            "template": "welcome_patient",
            "subject": None,
            "status": "sent",
            "provider": "twilio",
            "provider_message_id": "pm-1",
            "error": None,
            "execution_id": execution_id,
            "action_index": 1,
            "patient_id": 100,
            "created_at": "2025-02-15T10:00:00Z",
            "queued_at": None,
            "sent_at": "2025-02-15T10:00:00Z",
            "delivered_at": None,
            "failed_at": None,
            "error_code": None,
        }

    async def test_filters(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        execution_id = await create_execution(engine)
        email = await create_message(engine, execution_id=execution_id, action_index=0)
        sms = await create_message(engine, channel="sms", status="failed", error="Twilio down")
        other_patient = await create_message(engine, patient_id="p-abc")

        async def ids(**params: Any) -> list[str]:
            r = await client.get("/v1/messages", params=params, headers=auth())
            assert r.status_code == 200, r.text
            assert r.json()["meta"]["total"] == len(r.json()["data"])
            return sorted(m["id"] for m in r.json()["data"])

        assert await ids(channel="sms") == [sms.id]
        assert await ids(status="failed") == [sms.id]
        assert await ids(execution_id=execution_id) == [email.id]
        assert await ids(patient_id="100") == sorted([email.id, sms.id])
        assert await ids(patient_id="p-abc") == [other_patient.id]
        assert await ids(channel="email", status="failed") == []

    async def test_paging(self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine) -> None:
        for minutes in range(5):
            await create_message(engine, created_at=T0 + timedelta(minutes=minutes))
        r = await client.get("/v1/messages", params={"page": 2, "limit": 2}, headers=auth())
        assert r.json()["meta"] == {"total": 5, "page": 2, "limit": 2}
        created = [m["created_at"] for m in r.json()["data"]]
        assert created == ["2025-02-15T10:02:00Z", "2025-02-15T10:01:00Z"]

    @pytest.mark.parametrize(
        "params", [{"channel": "fax"}, {"execution_id": "abc"}, {"limit": 0}, {"page": -1}]
    )
    async def test_bad_filters_are_validation_errors(
        self, client: httpx.AsyncClient, auth: Auth, params: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/messages", params=params, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"


class TestGetMessage:
    async def test_includes_the_body(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        message = await create_message(engine, body="Your appointment is at 10:00")
        r = await client.get(f"/v1/messages/{message.id}", headers=auth("specialist"))
        assert r.status_code == 200
        data = r.json()["data"]
        assert data["id"] == message.id
        assert data["body"] == "Your appointment is at 10:00"
        assert data["subject"] == "Welcome"

    async def test_unknown_id_is_message_not_found(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/messages/msg_nope", headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "message_not_found"


class TestAccessAndTenancy:
    async def test_another_orgs_messages_are_invisible(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        theirs = await create_message(engine, org=1)
        mine = await create_message(engine, org=2)

        r = await client.get("/v1/messages", headers=auth(org=2))
        assert [m["id"] for m in r.json()["data"]] == [mine.id]
        r = await client.get(f"/v1/messages/{theirs.id}", headers=auth(org=2))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "message_not_found"

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_other_roles_are_forbidden(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, role: str
    ) -> None:
        message = await create_message(engine)
        for path in ("/v1/messages", f"/v1/messages/{message.id}"):
            r = await client.get(path, headers=auth(role))
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "forbidden"

    async def test_no_token_is_401(self, client: httpx.AsyncClient) -> None:
        for path in ("/v1/messages", "/v1/messages/msg_1"):
            r = await client.get(path)
            assert r.status_code == 401


class TestRepository:
    def test_new_message_ids(self) -> None:
        assert re.fullmatch(r"msg_[0-9a-f]{24}", new_message_id("email"))
        assert re.fullmatch(r"sms_[0-9a-f]{24}", new_message_id("sms"))
        assert new_message_id("email") != new_message_id("email")
        with pytest.raises(ValueError):
            new_message_id("fax")

    async def test_get_for_action(self, engine: AsyncEngine) -> None:
        execution_id = await create_execution(engine)
        sent = await create_message(engine, execution_id=execution_id, action_index=2)

        async with create_sessionmaker(engine)() as session:
            found = await get_for_action(session, execution_id, 2)
            missing = await get_for_action(session, execution_id, 3)
        assert found is not None and found.id == sent.id
        assert missing is None
