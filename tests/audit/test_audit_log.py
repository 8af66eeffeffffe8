"""The audit log: written with each change, readable by admins only, never rewritten."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.kit.clock import FrozenClock

Auth = Callable[..., dict[str, str]]
AUDIT = "/v1/audit-log"
RULE = {
    "name": "Welcome",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}


async def make_changes(client: httpx.AsyncClient, auth: Auth, clock: FrozenClock) -> dict[str, Any]:
    created = (await client.post("/v1/automations/rules", json=RULE, headers=auth())).json()["data"]
    clock.advance(minutes=1)
    await client.put(
        f"/v1/automations/rules/{created['id']}",
        json={"name": "Welcome v2"},
        headers=auth("admin", sub="usr_2"),
    )
    clock.advance(minutes=1)
    pathway = await client.post(
        "/v1/pathway-rules",
        json={"trigger_type": "appointment.booked", "rule_name": "VIP", "priority": 0},
        headers=auth(),
    )
    assert pathway.status_code == 201, pathway.text
    return created


class TestAuditLog:
    async def test_a_long_trace_id_and_a_long_sub_are_recorded_as_sent(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        """The longest request id careflow echoes and the longest sub it accepts both fit an
        audit entry (PostgreSQL refused ids over 64 characters: every audited write failed)."""
        trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;" + "x" * 135
        assert len(trace) == 200
        sub = "usr_" + "s" * 196
        r = await client.post(
            "/v1/pathway-rules",
            json={"trigger_type": "appointment.booked", "rule_name": "VIP", "priority": 0},
            headers={**auth("admin", sub=sub), "X-Request-ID": trace},
        )
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == r.json()["meta"]["request_id"] == trace
        [entry] = (await client.get(AUDIT, headers=auth())).json()["data"]
        assert (entry["request_id"], entry["actor_sub"]) == (trace, sub)

    async def test_every_change_is_recorded_with_actor_request_and_changed_fields(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
    ) -> None:
        created = await make_changes(client, auth, clock)
        r = await client.get(AUDIT, headers={**auth(), "X-Request-ID": "audit-check"})
        assert r.status_code == 200
        body = r.json()
        assert body["meta"] == {"total": 3, "page": 1, "limit": 20}
        newest, update, create = body["data"]
        assert newest["object_type"] == "pathway_rule"
        assert (update["action"], update["actor_sub"], update["actor_role"]) == (
            "update",
            "usr_2",
            "admin",
        )
        assert update["object_id"] == str(created["id"])
        assert update["before"] == {"name": "Welcome", "version": 1}
        assert update["after"]["name"] == "Welcome v2"
        assert create["action"] == "create" and create["before"] is None
        assert create["request_id"].startswith("req_")
        assert create["created_at"].endswith("Z")

    async def test_filters(self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock) -> None:
        created = await make_changes(client, auth, clock)
        start = clock.now() - timedelta(minutes=2)

        async def ids(**params: Any) -> list[str]:
            r = await client.get(AUDIT, params=params, headers=auth())
            assert r.status_code == 200, r.text
            return [e["action"] + ":" + e["object_type"] for e in r.json()["data"]]

        assert await ids(object_type="automation_rule") == [
            "update:automation_rule",
            "create:automation_rule",
        ]
        assert await ids(object_id=str(created["id"])) == [
            "update:automation_rule",
            "create:automation_rule",
        ]
        assert await ids(actor="usr_2") == ["update:automation_rule"]
        assert await ids(**{"from": (start + timedelta(seconds=30)).isoformat()}) == [
            "create:pathway_rule",
            "update:automation_rule",
        ]
        assert await ids(to=(start + timedelta(seconds=30)).isoformat()) == [
            "create:automation_rule"
        ]
        assert await ids(limit=1, page=2) == ["update:automation_rule"]

    async def test_scoped_to_the_organisation(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
    ) -> None:
        await make_changes(client, auth, clock)
        r = await client.get(AUDIT, headers=auth("admin", org=2))
        assert r.json()["meta"]["total"] == 0

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_admins_only(self, client: httpx.AsyncClient, auth: Auth, role: str) -> None:
        r = await client.get(AUDIT, headers=auth(role))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"

    async def test_no_way_to_change_it_through_the_api(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        for method in ("PUT", "PATCH", "DELETE", "POST"):
            r = await client.request(method, AUDIT, headers=auth())
            assert r.status_code == 405

    async def test_bad_filters_are_400(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(AUDIT, params={"from": "yesterday"}, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"


class TestAppendOnlyInDatabase:
    async def test_postgresql_refuses_update_and_delete(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("the append-only trigger is PostgreSQL's")
        await make_changes(client, auth, clock)
        for statement in ("UPDATE audit_log SET actor_sub = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
        assert count == 3
