from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker
from careflow.kit.models import IdempotencyKey
from careflow.pathways.models import Episode, PathwayConfig, PathwayRule
from careflow.pathways.resolution import CompiledConditionCache, resolve
from tests.fixtures.assertions import assert_pathway_error
from tests.fixtures.factories import PATHWAY_RULES, Auth, create_pathway_rule

RESOLVE = f"{PATHWAY_RULES}/resolve"
VIP_BOOKING = {
    "appointment": {
        "id": 50,
        "patient_id": 100,
        "type": "video",
        "appointment_type_id": "type_vip_consultation",
    },
    "patient": {"id": 100, "tags": ["vip"]},
}
ROUTINE_BOOKING = {
    "appointment": {"id": 51, "patient_id": 100, "type": "in_person", "appointment_type_id": "t1"},
    "patient": {"id": 100},
}
BOOKED_DEFAULT = {
    "creation_mode": "reuse_open",
    "inbox_visibility": "visible",
    "journey_type": "appointments",
    "suggested_assignment": "front_desk",
    "suggested_priority": "medium",
    "expected_next_actor": "practice",
}


async def explain(
    client: httpx.AsyncClient, auth: Auth, data: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    body = {"trigger_type": kw.pop("trigger_type", "appointment.booked"), "data": data}
    r = await client.post(RESOLVE, json=body, headers=auth(kw.pop("role", "specialist")))
    assert r.status_code == 200, r.text
    assert r.json()["meta"] == {"request_id": r.headers["x-request-id"]}
    result: dict[str, Any] = r.json()["data"]
    return result


class TestResolveSeedExamples:
    async def test_vip_bookings_become_urgent_for_the_team_lead(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)  # the seed's example rule
        result = await explain(client, auth, VIP_BOOKING)
        assert result == {
            "trigger_type": "appointment.booked",
            "config": {
                **BOOKED_DEFAULT,
                "suggested_assignment": "usr_team_lead",
                "suggested_priority": "urgent",
            },
            "matched_rule_id": rule["id"],
            "evaluations": [
                {
                    "rule_id": rule["id"],
                    "priority": 0,
                    "enabled": True,
                    "matched": True,
                    "failed_conditions": [],
                }
            ],
        }
        result = await explain(client, auth, ROUTINE_BOOKING)
        assert result["config"] == BOOKED_DEFAULT
        assert result["matched_rule_id"] is None
        assert result["evaluations"][0]["matched"] is False
        assert result["evaluations"][0]["failed_conditions"] == ["appointment_type_ids"]

    async def test_silencing_billing_episodes_for_insurance_invoices(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(
            client,
            auth,
            trigger_type="invoice.created",
            rule_name="Silence insurance invoices",
            conditions={"invoice_types": ["insurance"]},
            creation_mode="suppress",
            suggested_assignment=None,
            suggested_priority=None,
        )
        insurance = await explain(
            client,
            auth,
            {"invoice": {"id": 9, "patient_id": 100, "type": "insurance"}},
            trigger_type="invoice.created",
        )
        assert insurance["matched_rule_id"] == rule["id"]
        assert insurance["config"]["creation_mode"] == "suppress"
        # Only the non-null override changed anything.
        assert insurance["config"]["journey_type"] == "billing"
        self_pay = await explain(
            client,
            auth,
            {"invoice": {"id": 10, "patient_id": 100, "type": "self_pay"}},
            trigger_type="invoice.created",
        )
        assert self_pay["matched_rule_id"] is None
        assert self_pay["config"]["creation_mode"] == "reuse_open"
        assert self_pay["evaluations"][0]["failed_conditions"] == ["invoice_types"]


class TestResolveOrder:
    async def test_first_enabled_match_wins_and_every_rule_is_listed(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        # Priorities with gaps, created out of order; one disabled rule that would match.
        catch_all = await create_pathway_rule(
            client,
            auth,
            rule_name="catch-all",
            priority=40,
            conditions={},
            suggested_assignment="usr_anyone",
            suggested_priority="low",
        )
        disabled = await create_pathway_rule(
            client,
            auth,
            rule_name="disabled",
            priority=3,
            conditions={},
            suggested_assignment="usr_disabled",
            enabled=False,
        )
        video = await create_pathway_rule(
            client,
            auth,
            rule_name="video",
            priority=17,
            conditions={"appointment_types": ["video"]},
            suggested_assignment="usr_video",
            suggested_priority="high",
        )
        vip = await create_pathway_rule(
            client,
            auth,
            rule_name="vip and new",
            priority=8,
            conditions={"appointment_type_ids": ["type_vip_consultation"], "patient.tags": "new"},
            suggested_assignment="usr_vip",
        )
        await create_pathway_rule(client, auth, trigger_type="appointment.cancelled", priority=0)

        result = await explain(client, auth, VIP_BOOKING)
        assert result["matched_rule_id"] == video["id"]
        assert result["config"] == {
            **BOOKED_DEFAULT,
            "suggested_assignment": "usr_video",
            "suggested_priority": "high",
        }
        assert result["evaluations"] == [
            {
                "rule_id": disabled["id"],
                "priority": 3,
                "enabled": False,
                "matched": False,
                "failed_conditions": [],
            },
            {
                "rule_id": vip["id"],
                "priority": 8,
                "enabled": True,
                "matched": False,
                "failed_conditions": ["patient.tags"],
            },
            {
                "rule_id": video["id"],
                "priority": 17,
                "enabled": True,
                "matched": True,
                "failed_conditions": [],
            },
            {
                "rule_id": catch_all["id"],
                "priority": 40,
                "enabled": True,
                "matched": True,
                "failed_conditions": [],
            },
        ]

        routine = await explain(client, auth, ROUTINE_BOOKING)
        assert routine["matched_rule_id"] == catch_all["id"]
        # Both entries fail, named in the order the rule's conditions are stored (JSONB on
        # PostgreSQL keeps its own key order, so read it back rather than assume it).
        vip_eval = routine["evaluations"][1]
        stored = (await client.get(f"{PATHWAY_RULES}/{vip['id']}", headers=auth())).json()["data"]
        assert vip_eval["failed_conditions"] == list(stored["conditions"])
        assert set(vip_eval["failed_conditions"]) == {"appointment_type_ids", "patient.tags"}

    async def test_no_rules_gives_the_base_config(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        result = await explain(client, auth, VIP_BOOKING, role="admin")
        assert result == {
            "trigger_type": "appointment.booked",
            "config": BOOKED_DEFAULT,
            "matched_rule_id": None,
            "evaluations": [],
        }

    async def test_the_organisations_base_config_is_the_starting_point(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        stored = {**BOOKED_DEFAULT, "journey_type": "bookings", "suggested_assignment": "usr_desk"}
        r = await client.put("/v1/pathway-configs/appointment.booked", json=stored, headers=auth())
        assert r.status_code == 200
        await create_pathway_rule(client, auth)
        result = await explain(client, auth, VIP_BOOKING)
        assert result["config"] == {
            **stored,
            "suggested_assignment": "usr_team_lead",
            "suggested_priority": "urgent",
        }
        assert (await explain(client, auth, ROUTINE_BOOKING))["config"] == stored

    async def test_an_update_is_seen_at_once(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_pathway_rule(client, auth)
        assert (await explain(client, auth, VIP_BOOKING))["matched_rule_id"] == rule["id"]
        r = await client.patch(
            f"{PATHWAY_RULES}/{rule['id']}",
            json={"conditions": {"appointment_type_ids": ["other"]}},
            headers=auth(),
        )
        assert r.status_code == 200
        assert (await explain(client, auth, VIP_BOOKING))["matched_rule_id"] is None
        await client.patch(f"{PATHWAY_RULES}/{rule['id']}", json={"enabled": False}, headers=auth())
        evaluation = (await explain(client, auth, VIP_BOOKING))["evaluations"][0]
        assert (evaluation["enabled"], evaluation["matched"]) == (False, False)

    async def test_after_delete_the_base_config_applies(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        await client.delete(f"{PATHWAY_RULES}/{rule['id']}", headers=auth())
        result = await explain(client, auth, VIP_BOOKING)
        assert result["config"] == BOOKED_DEFAULT
        assert result["evaluations"] == []

    async def test_other_organisations_rules_do_not_apply(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await create_pathway_rule(client, auth)
        r = await client.post(
            RESOLVE,
            json={"trigger_type": "appointment.booked", "data": VIP_BOOKING},
            headers=auth(org=2),
        )
        assert r.json()["data"]["evaluations"] == []
        assert r.json()["data"]["config"] == BOOKED_DEFAULT


class TestResolveEndpoint:
    async def test_stores_nothing(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await create_pathway_rule(client, auth)

        async def counts() -> list[int]:
            async with create_sessionmaker(engine)() as s:
                return [
                    await s.scalar(select(func.count()).select_from(model)) or 0
                    for model in (AuditEntry, Episode, IdempotencyKey, PathwayConfig, PathwayRule)
                ]

        before = await counts()
        await explain(client, auth, VIP_BOOKING)
        r = await client.post(
            RESOLVE,
            json={"trigger_type": "appointment.booked", "data": VIP_BOOKING},
            headers={**auth(), "Idempotency-Key": "not-used-here"},
        )
        assert r.status_code == 200
        assert await counts() == before

    async def test_the_data_is_joined_with_stored_snapshots_as_routing_joins_it(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        """An appointment that carries only its patient's id brings the stored patient, and a
        cancellation that carries only the appointment's id brings the stored appointment."""
        vip = await create_pathway_rule(client, auth, conditions={"patient.tags": "vip"})
        by_type = await create_pathway_rule(
            client,
            auth,
            trigger_type="appointment.cancelled",
            conditions={"appointment_type_ids": ["type_vip_consultation"]},
        )
        booking = {"appointment": {"id": 50, "patient_id": 100}}
        assert (await explain(client, auth, booking))["matched_rule_id"] is None
        for org in (1, 2):  # another organisation's patient 100 is not this one
            r = await client.put(
                "/v1/entities/patient/100",
                json={"id": 100, "tags": ["vip"] if org == 1 else []},
                headers=auth("service", org=org),
            )
            assert r.status_code in (200, 201), r.text
        assert (await explain(client, auth, booking))["matched_rule_id"] == vip["id"]
        # The data wins over the snapshot, as for a posted event.
        untagged = {**booking, "patient": {"id": 100, "tags": []}}
        assert (await explain(client, auth, untagged))["matched_rule_id"] is None

        r = await client.put(
            "/v1/entities/appointment/60",
            json={"id": 60, "patient_id": 100, "appointment_type_id": "type_vip_consultation"},
            headers=auth("service"),
        )
        assert r.status_code in (200, 201), r.text
        cancelled = await explain(
            client, auth, {"appointment": {"id": 60}}, trigger_type="appointment.cancelled"
        )
        assert cancelled["matched_rule_id"] == by_type["id"]

    @pytest.mark.parametrize(
        "body",
        [
            {"trigger_type": "appointment.exploded", "data": {}},
            {"data": {}},
            {"trigger_type": "appointment.booked", "data": []},
            {"trigger_type": "appointment.booked", "data": {}, "extra": 1},
        ],
    )
    async def test_invalid_request_is_400(
        self, client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]
    ) -> None:
        assert_pathway_error(
            await client.post(RESOLVE, json=body, headers=auth()), 400, "VALIDATION_ERROR"
        )

    async def test_data_defaults_to_empty(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_pathway_rule(client, auth)
        r = await client.post(RESOLVE, json={"trigger_type": "appointment.booked"}, headers=auth())
        assert r.status_code == 200
        assert r.json()["data"]["evaluations"][0]["rule_id"] == rule["id"]
        assert r.json()["data"]["evaluations"][0]["matched"] is False

    async def test_resolve_is_not_a_rule_id(self, client: httpx.AsyncClient, auth: Auth) -> None:
        assert_pathway_error(await client.get(RESOLVE, headers=auth()), 404, "NOT_FOUND")


class TestCompiledConditionCache:
    async def test_compiles_once_per_version_and_stays_bounded(self, engine: AsyncEngine) -> None:
        cache = CompiledConditionCache(maxsize=2)
        rule = PathwayRule(id="rule_a", version=1, conditions={"appointment.type": "video"})
        first = cache.get(rule, {})
        assert cache.get(rule, {}) is first
        rule.version = 2
        rule.conditions = {"appointment.type": "phone"}
        second = cache.get(rule, {})
        assert second is not first
        assert second({"appointment": {"type": "phone"}})
        cache.get(PathwayRule(id="rule_b", version=1, conditions={}), {})
        assert len(cache) == 2

    async def test_resolve_function_directly(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        async with create_sessionmaker(engine)() as s:
            resolution = await resolve(s, 1, "appointment.booked", VIP_BOOKING)
        assert resolution.matched_rule_id == rule["id"]
        assert resolution.config["suggested_priority"] == "urgent"
