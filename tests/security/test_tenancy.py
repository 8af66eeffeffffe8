"""Cross-tenant matrix (SPEC §2): organisation 2, in every role, against organisation 1's ids.

Object endpoints must never answer 2xx (404 exactly like a missing object, or 403 for a
role without access), and must leave the object as it was. List endpoints, whatever filter
names organisation 1's ids, must never return its rows. Organisation 2 owns objects of its
own, so an empty list proves filtering rather than an empty database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.security.conftest import (
    CANARIES,
    ROLES,
    TEMPLATE_OVERRIDE,
    Auth,
    Drain,
    World,
    seed_world,
)

OTHER_ORG = 2

MISSING_PATHWAY_RULE = "rule_00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class ObjectCall:
    """One request naming organisation 1's object, and the same request for a missing one."""

    method: str
    path: Callable[[World], str]
    missing_path: str
    body: dict[str, Any] | None = None


OBJECT_CALLS: dict[str, ObjectCall] = {
    "get rule": ObjectCall(
        "GET", lambda w: f"/v1/automations/rules/{w.rule_id}", "/v1/automations/rules/999999"
    ),
    "put rule": ObjectCall(
        "PUT",
        lambda w: f"/v1/automations/rules/{w.rule_id}",
        "/v1/automations/rules/999999",
        {"name": "Hijacked", "enabled": False},
    ),
    "delete rule": ObjectCall(
        "DELETE", lambda w: f"/v1/automations/rules/{w.rule_id}", "/v1/automations/rules/999999"
    ),
    "test rule": ObjectCall(
        "POST",
        lambda w: f"/v1/automations/rules/{w.rule_id}/test",
        "/v1/automations/rules/999999/test",
        {"trigger_entity_type": "patient", "trigger_entity_id": 100},
    ),
    "get execution": ObjectCall(
        "GET",
        lambda w: f"/v1/automations/executions/{w.execution_id}",
        "/v1/automations/executions/999999",
    ),
    "retry execution": ObjectCall(
        "POST",
        lambda w: f"/v1/automations/executions/{w.execution_id}/retry",
        "/v1/automations/executions/999999/retry",
    ),
    "get event": ObjectCall("GET", lambda w: f"/v1/events/{w.event_id}", "/v1/events/999999"),
    "get form": ObjectCall("GET", lambda w: f"/v1/forms/{w.form_id}", "/v1/forms/999999"),
    "complete form": ObjectCall(
        "POST", lambda w: f"/v1/forms/{w.form_id}/complete", "/v1/forms/999999/complete"
    ),
    "get email message": ObjectCall(
        "GET", lambda w: f"/v1/messages/{w.message_ids[0]}", "/v1/messages/msg_missing"
    ),
    "get sms message": ObjectCall(
        "GET", lambda w: f"/v1/messages/{w.message_ids[1]}", "/v1/messages/sms_missing"
    ),
    "get pathway rule": ObjectCall(
        "GET",
        lambda w: f"/v1/pathway-rules/{w.pathway_rule_id}",
        f"/v1/pathway-rules/{MISSING_PATHWAY_RULE}",
    ),
    "patch pathway rule": ObjectCall(
        "PATCH",
        lambda w: f"/v1/pathway-rules/{w.pathway_rule_id}",
        f"/v1/pathway-rules/{MISSING_PATHWAY_RULE}",
        {"rule_name": "Hijacked", "enabled": False},
    ),
    "delete pathway rule": ObjectCall(
        "DELETE",
        lambda w: f"/v1/pathway-rules/{w.pathway_rule_id}",
        f"/v1/pathway-rules/{MISSING_PATHWAY_RULE}",
    ),
    "get episode": ObjectCall(
        "GET", lambda w: f"/v1/episodes/{w.episode_id}", "/v1/episodes/999999"
    ),
    "patch episode": ObjectCall(
        "PATCH",
        lambda w: f"/v1/episodes/{w.episode_id}",
        "/v1/episodes/999999",
        {"status": "closed", "assignee": "usr_intruder", "priority": "low"},
    ),
}

# What organisation 1's admin sees of its own objects: compared before and after the attack.
OWNER_VIEWS: list[Callable[[World], str]] = [
    lambda w: f"/v1/automations/rules/{w.rule_id}",
    lambda w: f"/v1/automations/executions/{w.execution_id}",
    lambda w: f"/v1/forms/{w.form_id}",
    lambda w: f"/v1/pathway-rules/{w.pathway_rule_id}",
    lambda w: f"/v1/episodes/{w.episode_id}",
    lambda w: f"/v1/templates/email/{w.template_key}",
    lambda w: f"/v1/pathway-configs/{w.config_trigger}",
    lambda w: f"/v1/segments/{w.segment_id}/members",
    lambda w: f"/v1/patients/{w.patient_id}/gate",
    lambda w: "/v1/audit-log",
]


def _stable(body: dict[str, Any]) -> Any:
    # Pathway bodies carry a fresh request id per answer.
    return (
        {k: v for k, v in body.items() if k != "meta"}
        if "request_id" in str(body.get("meta"))
        else body
    )


async def owner_snapshot(client: httpx.AsyncClient, auth: Auth, world: World) -> list[Any]:
    views = []
    for view in OWNER_VIEWS:
        r = await client.get(view(world), headers=auth("admin", org=world.org))
        assert r.status_code == 200, r.text
        views.append(_stable(r.json()))
    return views


@pytest.fixture
async def worlds(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> tuple[World, World]:
    mine = await seed_world(client, auth, drain, org=1, patient_id=100)
    theirs = await seed_world(client, auth, drain, org=OTHER_ORG, patient_id=200)
    return mine, theirs


class TestObjectEndpoints:
    @pytest.mark.parametrize("name", list(OBJECT_CALLS))
    async def test_other_org_gets_nothing_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        worlds: tuple[World, World],
        name: str,
    ) -> None:
        world, _ = worlds
        call = OBJECT_CALLS[name]
        before = await owner_snapshot(client, auth, world)
        for role in ROLES:
            headers = auth(role, org=OTHER_ORG, sub="usr_intruder")
            r = await client.request(call.method, call.path(world), json=call.body, headers=headers)
            assert r.status_code in (403, 404), (role, r.status_code, r.text)
            # Indistinguishable from an object that does not exist at all.
            missing = await client.request(
                call.method, call.missing_path, json=call.body, headers=headers
            )
            assert r.status_code == missing.status_code, (role, r.text, missing.text)
            assert _stable(r.json()) == _stable(missing.json()), role
            for canary in CANARIES:
                assert canary not in r.text
        assert await owner_snapshot(client, auth, world) == before


def assert_no_rows_of(world: World, body: dict[str, Any]) -> None:
    """A list body holds none of ``world``'s rows (ids are global, so compare by owner)."""
    for row in body["data"]:
        assert row.get("organization_id", OTHER_ORG) == OTHER_ORG, row
        assert row.get("patient_id") != world.patient_id, row
        assert row.get("trigger_entity_id") != world.patient_id, row
        assert row.get("id") != world.pathway_rule_id, row
        assert row.get("id") not in world.message_ids, row


# (name, method, path, body, extra check on the allowed answer's JSON)
LIST_CALLS: list[tuple[str, str, Callable[[World], str], dict[str, Any] | None, Any]] = [
    ("rules", "GET", lambda w: "/v1/automations/rules?trigger_event=patient.onboarded", None, None),
    (
        "executions by rule",
        "GET",
        lambda w: f"/v1/automations/executions?automation_rule_id={w.rule_id}",
        None,
        lambda body: body["data"] == [],
    ),
    (
        "forms by patient",
        "GET",
        lambda w: f"/v1/forms?patient_id={w.patient_id}",
        None,
        lambda body: body["data"] == [],
    ),
    (
        "messages by execution",
        "GET",
        lambda w: f"/v1/messages?execution_id={w.execution_id}",
        None,
        lambda body: body["data"] == [],
    ),
    (
        "messages by patient",
        "GET",
        lambda w: f"/v1/messages?patient_id={w.patient_id}",
        None,
        lambda body: body["data"] == [],
    ),
    ("segment members", "GET", lambda w: f"/v1/segments/{w.segment_id}/members", None, None),
    (
        "episodes by patient",
        "GET",
        lambda w: f"/v1/episodes?patient_id={w.patient_id}",
        None,
        lambda body: body["data"] == [],
    ),
    (
        "audit by object",
        "GET",
        lambda w: f"/v1/audit-log?object_type=automation_rule&object_id={w.rule_id}",
        None,
        lambda body: body["data"] == [],
    ),
    ("audit", "GET", lambda w: "/v1/audit-log?limit=100", None, None),
    (
        "pathway rules",
        "GET",
        lambda w: "/v1/pathway-rules?trigger_type=patient.onboarded",
        None,
        None,
    ),
    (
        "gate",
        "GET",
        lambda w: f"/v1/patients/{w.patient_id}/gate",
        None,
        lambda body: body["data"]["pending_forms"] == [] and not body["data"]["blocked"],
    ),
]


class TestListEndpoints:
    @pytest.mark.parametrize(
        ("name", "method", "path", "body", "extra"), LIST_CALLS, ids=[c[0] for c in LIST_CALLS]
    )
    async def test_never_returns_the_other_orgs_rows(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        worlds: tuple[World, World],
        name: str,
        method: str,
        path: Callable[[World], str],
        body: dict[str, Any] | None,
        extra: Callable[[dict[str, Any]], bool] | None,
    ) -> None:
        world, _ = worlds
        for role in ROLES:
            r = await client.request(
                method, path(world), json=body, headers=auth(role, org=OTHER_ORG)
            )
            if r.status_code == 403:
                continue
            assert r.status_code == 200, (role, r.text)
            payload = r.json()
            assert not any(c in r.text for c in CANARIES), role
            if isinstance(payload["data"], list):
                assert_no_rows_of(world, payload)
            if extra is not None:
                assert extra(payload), (role, payload)

    async def test_resolve_uses_only_the_callers_rules(
        self, client: httpx.AsyncClient, auth: Auth, worlds: tuple[World, World]
    ) -> None:
        world, theirs = worlds
        body = {"trigger_type": "patient.onboarded", "data": {"patient": {"id": 100}}}
        r = await client.post("/v1/pathway-rules/resolve", json=body, headers=auth(org=OTHER_ORG))
        evaluated = {e["rule_id"] for e in r.json()["data"]["evaluations"]}
        assert evaluated == {theirs.pathway_rule_id}
        assert world.pathway_rule_id not in r.text


class TestSharedKeys:
    """Templates and pathway configs are keyed by name, not id: each organisation writes its
    own row under the key, and never reads or changes another's."""

    async def test_template_override_is_per_org(
        self, client: httpx.AsyncClient, auth: Auth, world: World
    ) -> None:
        path = f"/v1/templates/email/{world.template_key}"
        theirs = await client.get(path, headers=auth("admin", org=OTHER_ORG))
        assert theirs.status_code == 200
        assert theirs.json()["data"]["built_in"] is True
        assert theirs.json()["data"]["body"] != TEMPLATE_OVERRIDE["body"]
        listed = await client.get("/v1/templates?limit=100", headers=auth("admin", org=OTHER_ORG))
        assert all(t["built_in"] for t in listed.json()["data"])

        own = {"subject": "Org 2 subject", "body": "Org 2 body"}
        assert (await client.put(path, json=own, headers=auth(org=OTHER_ORG))).status_code == 201
        mine = await client.get(path, headers=auth("admin", org=1))
        assert mine.json()["data"]["body"] == TEMPLATE_OVERRIDE["body"]
        assert (await client.delete(path, headers=auth(org=OTHER_ORG))).status_code == 204
        mine = await client.get(path, headers=auth("admin", org=1))
        assert mine.json()["data"]["body"] == TEMPLATE_OVERRIDE["body"]

    async def test_pathway_config_is_per_org(
        self, client: httpx.AsyncClient, auth: Auth, world: World
    ) -> None:
        path = f"/v1/pathway-configs/{world.config_trigger}"
        theirs = await client.get(path, headers=auth("admin", org=OTHER_ORG))
        assert theirs.json()["data"]["is_default"] is True
        listed = await client.get("/v1/pathway-configs?limit=100", headers=auth(org=OTHER_ORG))
        assert all(c["is_default"] for c in listed.json()["data"])
        mine_before = (await client.get(path, headers=auth(org=1))).json()["data"]
        config = {**{k: v for k, v in mine_before.items() if k in _CONFIG_FIELDS}}
        config["suggested_assignment"] = "usr_intruder"
        assert (await client.put(path, json=config, headers=auth(org=OTHER_ORG))).status_code == 200
        assert (await client.get(path, headers=auth(org=1))).json()["data"] == mine_before

    async def test_entity_snapshot_is_per_org(
        self, client: httpx.AsyncClient, auth: Auth, world: World
    ) -> None:
        # Organisation 2 writing "patient 100" writes its own patient 100.
        r = await client.put(
            f"/v1/entities/patient/{world.patient_id}",
            json={"email": "intruder@example.org"},
            headers=auth("service", org=OTHER_ORG),
        )
        assert r.status_code == 200
        preview = await client.post(
            f"/v1/automations/rules/{world.rule_id}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": world.patient_id},
            headers=auth(org=1),
        )
        assert "intruder@example.org" not in preview.text
        assert any(
            a.get("would_send_to") == CANARIES[2] for a in preview.json()["data"]["actions_preview"]
        )


_CONFIG_FIELDS = (
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
)
