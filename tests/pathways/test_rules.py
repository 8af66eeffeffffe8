from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock
from careflow.pathways.models import PathwayRule
from tests.fixtures.assertions import assert_pathway_error, error_fields
from tests.fixtures.factories import PATHWAY_RULES, Auth, create_pathway_rule, pathway_rule_body

RULE_KEYS = {
    "id",
    "trigger_type",
    "rule_name",
    "priority",
    "conditions",
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
    "enabled",
    "created_at",
    "updated_at",
}
RULE_ID = re.compile(r"^rule_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def audit_entries(engine: AsyncEngine, object_id: str) -> list[AuditEntry]:
    async with create_sessionmaker(engine)() as s:
        rows = await s.scalars(
            select(AuditEntry).where(AuditEntry.object_id == object_id).order_by(AuditEntry.id)
        )
        return list(rows.all())


class TestAccess:
    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_reads_are_for_staff_only(
        self, client: httpx.AsyncClient, auth: Auth, role: str
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        for r in (
            await client.get(PATHWAY_RULES, headers=auth(role)),
            await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth(role)),
            await client.post(
                f"{PATHWAY_RULES}/resolve",
                json={"trigger_type": "appointment.booked", "data": {}},
                headers=auth(role),
            ),
        ):
            assert_pathway_error(r, 403, "FORBIDDEN")

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_writes_are_for_admins_only(
        self, client: httpx.AsyncClient, auth: Auth, role: str
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        for r in (
            await client.post(
                PATHWAY_RULES, json=pathway_rule_body(priority=5), headers=auth(role)
            ),
            await client.patch(
                f"{PATHWAY_RULES}/{rule['id']}", json={"rule_name": "x"}, headers=auth(role)
            ),
            await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth(role)),
        ):
            assert_pathway_error(r, 403, "FORBIDDEN")
        r = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth("specialist"))
        assert r.json()["data"] == rule

    async def test_specialist_reads(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth("specialist"))
        assert r.status_code == 200
        assert r.json()["data"] == rule

    async def test_no_token_is_401_in_the_pathway_envelope(self, client: httpx.AsyncClient) -> None:
        assert_pathway_error(await client.get(PATHWAY_RULES), 401, "UNAUTHORIZED")
        r = await client.get(PATHWAY_RULES, headers={"Authorization": "Bearer not-a-jwt"})
        assert_pathway_error(r, 401, "UNAUTHORIZED")


class TestCreatePathwayRule:
    async def test_creates_the_seed_rule(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        r = await client.post(
            PATHWAY_RULES, json=pathway_rule_body(), headers={**auth(), "X-Request-ID": "req_given"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["meta"] == {"request_id": "req_given"}
        rule = body["data"]
        assert set(rule) == RULE_KEYS
        assert RULE_ID.match(rule["id"])
        assert rule == {
            "id": rule["id"],
            "trigger_type": "appointment.booked",
            "rule_name": "VIP bookings → urgent priority",
            "priority": 0,
            "conditions": {"appointment_type_ids": ["type_vip_consultation"]},
            "creation_mode": None,
            "inbox_visibility": None,
            "journey_type": None,
            "suggested_assignment": "usr_team_lead",
            "suggested_priority": "urgent",
            "expected_next_actor": None,
            "enabled": True,
            "created_at": "2025-02-15T10:00:00Z",
            "updated_at": "2025-02-15T10:00:00Z",
        }
        [entry] = await audit_entries(engine, rule["id"])
        assert (entry.action, entry.object_type, entry.actor_sub) == (
            "create",
            "pathway_rule",
            "usr_1",
        )
        assert entry.before is None
        assert entry.after is not None and entry.after["priority"] == 0
        assert entry.request_id == "req_given"

    async def test_only_required_fields(self, client: httpx.AsyncClient, auth: Auth) -> None:
        body = {"trigger_type": "invoice.created", "rule_name": "Minimal", "priority": 3}
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert r.status_code == 201, r.text
        rule = r.json()["data"]
        assert rule["enabled"] is True
        assert rule["conditions"] is None
        for field in (
            "creation_mode",
            "inbox_visibility",
            "journey_type",
            "suggested_assignment",
            "suggested_priority",
            "expected_next_actor",
        ):
            assert rule[field] is None

    async def test_every_override_and_disabled(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        body = pathway_rule_body(
            creation_mode="create_new",
            inbox_visibility="hidden",
            journey_type="vip-care_2",
            expected_next_actor="patient",
            enabled=False,
        )
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert r.status_code == 201, r.text
        rule = r.json()["data"]
        for key, value in body.items():
            assert rule[key] == value

    @pytest.mark.parametrize("field", ["trigger_type", "rule_name", "priority"])
    async def test_required_fields(
        self, client: httpx.AsyncClient, auth: Auth, field: str
    ) -> None:
        body = pathway_rule_body()
        del body[field]
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == {field}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("priority", -1),
            ("priority", "1"),
            ("priority", 1.5),
            ("priority", True),
            ("priority", None),
            ("rule_name", ""),
            ("rule_name", "   "),
            ("rule_name", None),
            ("rule_name", 7),
            ("trigger_type", "appointment.exploded"),
            ("trigger_type", None),
            ("creation_mode", "sometimes"),
            ("inbox_visibility", "shown"),
            ("journey_type", "Not A Slug"),
            ("journey_type", "9starts-with-digit"),
            ("journey_type", "x" * 65),
            ("suggested_assignment", ""),
            ("suggested_priority", "critical"),
            ("expected_next_actor", "robot"),
            ("enabled", "yes"),
            ("conditions", ["not", "an", "object"]),
            ("conditions", {"appointment.type": {"between": [1, 2]}}),
            ("conditions", {"appointment.type": None}),
            ("conditions", {"invoice_types": ["insurance"]}),  # not a field of this trigger
            ("unknown_field", 1),
        ],
    )
    async def test_invalid_values_are_400_naming_the_field(
        self, client: httpx.AsyncClient, auth: Auth, field: str, value: Any
    ) -> None:
        body = pathway_rule_body(**{field: value})
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert any(f == field or f.startswith(f"{field}.") for f in error_fields(r)), r.json()

    async def test_conditions_may_use_named_fields_and_dotted_paths(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        conditions = {
            "appointment_types": ["video"],
            "patient.tags": "vip",
            "any": [{"practitioner_ids": ["pr_1"]}, {"appointment.duration": {"gte": 60}}],
        }
        rule = await create_pathway_rule(client, auth, conditions=conditions)
        assert rule["conditions"] == conditions

    @pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
    async def test_body_not_a_json_object_is_400(
        self, client: httpx.AsyncClient, auth: Auth, raw: bytes
    ) -> None:
        headers = {**auth(), "Content-Type": "application/json"}
        r = await client.post(PATHWAY_RULES, content=raw, headers=headers)
        assert_pathway_error(r, 400, "VALIDATION_ERROR")

    async def test_duplicate_trigger_and_priority_is_409(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await create_pathway_rule(client, auth, priority=4)
        body = pathway_rule_body(priority=4, rule_name="b")
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert_pathway_error(r, 409, "CONFLICT")
        async with create_sessionmaker(engine)() as s:
            assert await s.scalar(select(func.count()).select_from(PathwayRule)) == 1
            # A refused create writes no audit entry either.
            assert await s.scalar(select(func.count()).select_from(AuditEntry)) == 1

    async def test_same_priority_on_another_trigger_or_org_is_fine(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await create_pathway_rule(client, auth, priority=1)
        await create_pathway_rule(client, auth, priority=1, trigger_type="appointment.cancelled")
        await create_pathway_rule(client, auth, org=2, priority=1)

    async def test_concurrent_duplicates_one_wins(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("needs concurrent writers (PostgreSQL)")
        results = await asyncio.gather(
            *(
                client.post(
                    PATHWAY_RULES,
                    json=pathway_rule_body(rule_name=f"r{i}", priority=7),
                    headers=auth(),
                )
                for i in range(2)
            )
        )
        assert sorted(r.status_code for r in results) == [201, 409]
        loser = next(r for r in results if r.status_code == 409)
        assert_pathway_error(loser, 409, "CONFLICT")
        async with create_sessionmaker(engine)() as s:
            assert await s.scalar(select(func.count()).select_from(PathwayRule)) == 1


class TestListPathwayRules:
    async def seed_rules(self, client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
        specs: list[tuple[str, int, dict[str, Any]]] = [
            ("invoice.created", 5, {"creation_mode": "suppress", "suggested_priority": None}),
            ("appointment.booked", 10, {"suggested_priority": "urgent"}),
            ("appointment.booked", 2, {"suggested_priority": "low", "enabled": False}),
            ("appointment.cancelled", 0, {"creation_mode": "create_new"}),
            ("invoice.created", 1, {"suggested_priority": "urgent", "enabled": False}),
            ("appointment.booked", 0, {"creation_mode": "suppress"}),
        ]
        rules = []
        for trigger, priority, extra in specs:
            body = {
                "trigger_type": trigger,
                "rule_name": f"{trigger} {priority}",
                "priority": priority,
                **extra,
            }
            r = await client.post(PATHWAY_RULES, json=body, headers=auth())
            assert r.status_code == 201, r.text
            rules.append(r.json()["data"])
        return rules

    @staticmethod
    def keys(r: httpx.Response) -> list[tuple[str, int]]:
        return [(d["trigger_type"], d["priority"]) for d in r.json()["data"]]

    async def test_sorted_by_trigger_type_then_priority(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await self.seed_rules(client, auth)
        r = await client.get(PATHWAY_RULES, headers=auth("specialist"))
        assert r.status_code == 200
        assert self.keys(r) == [
            ("appointment.booked", 0),
            ("appointment.booked", 2),
            ("appointment.booked", 10),
            ("appointment.cancelled", 0),
            ("invoice.created", 1),
            ("invoice.created", 5),
        ]
        assert r.json()["meta"] == {
            "total": 6,
            "limit": 20,
            "offset": 0,
            "request_id": r.headers["x-request-id"],
        }
        assert all(set(d) == RULE_KEYS for d in r.json()["data"])

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                {"trigger_type": "appointment.booked"},
                [("appointment.booked", 0), ("appointment.booked", 2), ("appointment.booked", 10)],
            ),
            ({"enabled": "false"}, [("appointment.booked", 2), ("invoice.created", 1)]),
            # The seed types the filter as a string, "Filter enabled/disabled": both spellings.
            ({"enabled": "disabled"}, [("appointment.booked", 2), ("invoice.created", 1)]),
            (
                {"enabled": "enabled"},
                [
                    ("appointment.booked", 0),
                    ("appointment.booked", 10),
                    ("appointment.cancelled", 0),
                    ("invoice.created", 5),
                ],
            ),
            (
                {"enabled": "true"},
                [
                    ("appointment.booked", 0),
                    ("appointment.booked", 10),
                    ("appointment.cancelled", 0),
                    ("invoice.created", 5),
                ],
            ),
            ({"creation_mode": "suppress"}, [("appointment.booked", 0), ("invoice.created", 5)]),
            (
                {"suggested_priority": "urgent"},
                [("appointment.booked", 10), ("invoice.created", 1)],
            ),
            (
                {"trigger_type": "appointment.booked", "enabled": "false"},
                [("appointment.booked", 2)],
            ),
            ({"trigger_type": "form.completed"}, []),
        ],
    )
    async def test_filters(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        query: dict[str, str],
        expected: list[tuple[str, int]],
    ) -> None:
        await self.seed_rules(client, auth)
        r = await client.get(PATHWAY_RULES, params=query, headers=auth())
        assert r.status_code == 200, r.text
        assert self.keys(r) == expected
        assert r.json()["meta"]["total"] == len(expected)

    async def test_paging(self, client: httpx.AsyncClient, auth: Auth) -> None:
        await self.seed_rules(client, auth)
        r = await client.get(PATHWAY_RULES, params={"limit": 2, "offset": 3}, headers=auth())
        assert self.keys(r) == [("appointment.cancelled", 0), ("invoice.created", 1)]
        meta = r.json()["meta"]
        assert (meta["total"], meta["limit"], meta["offset"]) == (6, 2, 3)
        r = await client.get(PATHWAY_RULES, params={"offset": 10}, headers=auth())
        assert r.json()["data"] == []
        assert r.json()["meta"]["total"] == 6

    @pytest.mark.parametrize(
        "query",
        [
            {"enabled": "yes"},
            {"enabled": "1"},
            {"limit": "0"},
            {"limit": "101"},
            {"limit": "ten"},
            {"offset": "-1"},
            {"creation_mode": "sometimes"},
            {"suggested_priority": "critical"},
            {"trigger_type": "nope"},
        ],
    )
    async def test_bad_query_is_400(
        self, client: httpx.AsyncClient, auth: Auth, query: dict[str, str]
    ) -> None:
        r = await client.get(PATHWAY_RULES, params=query, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")

    async def test_limit_bounds(self, client: httpx.AsyncClient, auth: Auth) -> None:
        for limit in ("1", "100"):
            r = await client.get(PATHWAY_RULES, params={"limit": limit}, headers=auth())
            assert r.status_code == 200
            assert r.json()["meta"]["limit"] == int(limit)

    async def test_other_organisations_rules_are_invisible(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await self.seed_rules(client, auth)
        r = await client.get(PATHWAY_RULES, headers=auth(org=2))
        assert r.json()["data"] == []
        assert r.json()["meta"]["total"] == 0


class TestGetPathwayRule:
    async def test_get(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        assert r.status_code == 200
        assert r.json() == {"data": rule, "meta": {"request_id": r.headers["x-request-id"]}}

    async def test_missing_and_other_org_are_404(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        missing = await client.get(
            f"{PATHWAY_RULES}/rule_00000000-0000-4000-8000-000000000000", headers=auth()
        )
        foreign = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth(org=2))
        for r in (missing, foreign):
            assert_pathway_error(r, 404, "NOT_FOUND")
        assert missing.json()["error"] == foreign.json()["error"]


class TestUpdatePathwayRule:
    async def test_updates_fields_and_timestamps(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        clock: FrozenClock,
        engine: AsyncEngine,
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        clock.advance(minutes=5)
        patch = {
            "rule_name": "Renamed",
            "priority": 9,
            "suggested_priority": "high",
            "journey_type": "vip",
            "enabled": False,
            "conditions": {"appointment_types": ["video"]},
        }
        r = await client.patch(f"{PATHWAY_RULES}/{rule['id']}", json=patch, headers=auth())
        assert r.status_code == 200, r.text
        assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]
        updated = r.json()["data"]
        assert updated == {**rule, **patch, "updated_at": "2025-02-15T10:05:00Z"}
        async with create_sessionmaker(engine)() as s:
            row = await s.get(PathwayRule, rule["id"])
            assert row is not None and row.version == 2
        entries = await audit_entries(engine, rule["id"])
        assert [e.action for e in entries] == ["create", "update"]
        assert entries[1].before is not None and entries[1].before["rule_name"] == rule["rule_name"]
        assert entries[1].after is not None and entries[1].after["rule_name"] == "Renamed"

    async def test_every_update_raises_the_version(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        for name in ("a", "b", "c"):
            r = await client.patch(
                f"{PATHWAY_RULES}/{rule['id']}", json={"rule_name": name}, headers=auth()
            )
            assert r.status_code == 200
        async with create_sessionmaker(engine)() as s:
            row = await s.get(PathwayRule, rule["id"])
            assert row is not None and row.version == 4

    async def test_nullable_fields_can_be_cleared(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        patch = {"suggested_assignment": None, "suggested_priority": None, "conditions": None}
        r = await client.patch(f"{PATHWAY_RULES}/{rule['id']}", json=patch, headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["suggested_assignment"], data["suggested_priority"], data["conditions"]) == (
            None,
            None,
            None,
        )

    async def test_changing_trigger_type_is_400(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.patch(
            f"{PATHWAY_RULES}/{rule['id']}",
            json={"trigger_type": "appointment.cancelled", "rule_name": "moved"},
            headers=auth(),
        )
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == {"trigger_type"}
        r = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        assert r.json()["data"] == rule

    async def test_sending_the_same_trigger_type_is_fine(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.patch(
            f"{PATHWAY_RULES}/{rule['id']}",
            json={"trigger_type": "appointment.booked", "rule_name": "same trigger"},
            headers=auth(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["trigger_type"] == "appointment.booked"
        assert r.json()["data"]["rule_name"] == "same trigger"

    async def test_duplicate_priority_is_409(self, client: httpx.AsyncClient, auth: Auth) -> None:
        await create_pathway_rule(client, auth, priority=0)
        other = await create_pathway_rule(client, auth, priority=1, rule_name="other")
        r = await client.patch(
            f"{PATHWAY_RULES}/{other['id']}", json={"priority": 0}, headers=auth()
        )
        assert_pathway_error(r, 409, "CONFLICT")
        r = await client.get(f"{PATHWAY_RULES}/{other['id']}", headers=auth())
        assert r.json()["data"]["priority"] == 1

    @pytest.mark.parametrize(
        "patch",
        [
            {"rule_name": None},
            {"priority": None},
            {"enabled": None},
            {"priority": -3},
            {"priority": False},
            {"creation_mode": "always"},
            {"conditions": {"appointment.type": {"nope": 1}}},
            {"conditions": {"channels": ["sms"]}},
            {"unknown": True},
        ],
    )
    async def test_invalid_patch_is_400(
        self, client: httpx.AsyncClient, auth: Auth, patch: dict[str, Any]
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.patch(f"{PATHWAY_RULES}/{rule['id']}", json=patch, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")

    async def test_missing_and_other_org_are_404(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.patch(
            f"{PATHWAY_RULES}/rule_nope", json={"rule_name": "x"}, headers=auth()
        )
        assert_pathway_error(r, 404, "NOT_FOUND")
        r = await client.patch(
            f"{PATHWAY_RULES}/{rule['id']}", json={"rule_name": "x"}, headers=auth(org=2)
        )
        assert_pathway_error(r, 404, "NOT_FOUND")


class TestDeletePathwayRule:
    async def test_delete_answers_the_seed_body(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        assert r.status_code == 200
        assert r.json() == {"data": None, "meta": {"request_id": r.headers["x-request-id"]}}
        assert_pathway_error(
            await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth()), 404, "NOT_FOUND"
        )
        assert_pathway_error(
            await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth()), 404, "NOT_FOUND"
        )
        entries = await audit_entries(engine, rule["id"])
        assert [e.action for e in entries] == ["create", "delete"]
        assert entries[1].after is None

    async def test_priority_is_free_again_after_delete(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth, priority=2)
        await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        await create_pathway_rule(client, auth, priority=2)

    async def test_other_org_cannot_delete(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth(org=2))
        assert_pathway_error(r, 404, "NOT_FOUND")
        got = await client.get(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        assert got.status_code == 200
