from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.automations.catalog import TEMPLATE_KEY_MESSAGE
from careflow.automations.enabled import RuleSnapshot, enabled_rules_for
from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock
from tests.fixtures.factories import (
    RULES,
    SEED_FIRST_VIDEO,
    SEED_GDPR_WELCOME,
    create_rule,
    rule_body,
)

Auth = Callable[..., dict[str, str]]

RULE_KEYS = {
    "id",
    "organization_id",
    "name",
    "description",
    "enabled",
    "trigger_event",
    "trigger_config",
    "conditions",
    "actions",
    "execution_count",
    "last_executed_at",
    "created_at",
    "updated_at",
    "version",
}


def fields_of(error_body: dict[str, Any]) -> list[str]:
    assert error_body["error"]["code"] == "validation_error", error_body
    return [d["field"] for d in error_body["error"]["details"]]


async def audit_entries(engine: AsyncEngine) -> list[AuditEntry]:
    async with create_sessionmaker(engine)() as session:
        query = select(AuditEntry).order_by(AuditEntry.id)
        return list((await session.execute(query)).scalars().all())


class TestCreateRule:
    @pytest.mark.parametrize("seed", [SEED_GDPR_WELCOME, SEED_FIRST_VIDEO])
    async def test_seed_examples_round_trip(
        self, client: httpx.AsyncClient, auth: Auth, seed: dict[str, Any]
    ) -> None:
        r = await client.post(RULES, json=seed, headers=auth())
        assert r.status_code == 201, r.text
        data = r.json()["data"]
        assert set(data) == RULE_KEYS
        for key, value in seed.items():
            assert data[key] == value, key
        assert data["organization_id"] == 1
        assert data["execution_count"] == 0
        assert data["last_executed_at"] is None
        assert data["version"] == 1
        assert data["created_at"] == data["updated_at"] == "2025-02-15T10:00:00Z"

        got = await client.get(f"{RULES}/{data['id']}", headers=auth("specialist"))
        assert got.status_code == 200
        assert got.json() == {"data": data}

    async def test_defaults(self, client: httpx.AsyncClient, auth: Auth) -> None:
        data = await create_rule(client, auth)
        assert data["enabled"] is True
        assert data["description"] is None
        assert data["conditions"] == {}
        assert data["trigger_config"] == {}

    async def test_trigger_config_defaults_are_filled_and_stored(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        data = await create_rule(client, auth, trigger_event="appointment.before_start")
        assert data["trigger_config"] == {"hours_before": 24}
        data = await create_rule(
            client, auth, trigger_event="appointment.after_end", trigger_config={"hours_after": 2}
        )
        assert data["trigger_config"] == {"hours_after": 2}

    async def test_actions_are_stored_as_given(self, client: httpx.AsyncClient, auth: Auth) -> None:
        actions = [
            {"type": "send_sms", "template": "appointment_reminder"},
            {"type": "update_segment", "segment_id": 7, "action": "remove"},
        ]
        data = await create_rule(client, auth, actions=actions)
        assert data["actions"] == actions

    async def test_name_is_stripped(self, client: httpx.AsyncClient, auth: Auth) -> None:
        data = await create_rule(client, auth, name="  Welcome  ")
        assert data["name"] == "Welcome"

    async def test_org_template_counts_as_known(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        from careflow.templates.models import Template

        async with create_sessionmaker(engine)() as session:
            session.add(
                Template(
                    organization_id=1,
                    key="org_special",
                    channel="email",
                    subject="Hi",
                    body="Hello",
                    created_at=clock.now(),
                    updated_at=clock.now(),
                )
            )
            await session.commit()
        actions = [{"type": "send_email", "template": "org_special"}]
        await create_rule(client, auth, actions=actions)
        # Another organisation's template is not this one's.
        r = await client.post(RULES, json=rule_body(actions=actions), headers=auth(org=2))
        assert fields_of(r.json()) == ["actions[0].template"]
        # An email template is not an SMS template.
        sms = [{"type": "send_sms", "template": "org_special"}]
        r = await client.post(RULES, json=rule_body(actions=sms), headers=auth())
        assert fields_of(r.json()) == ["actions[0].template"]

    async def test_audit_entry(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        data = await create_rule(client, auth)
        [entry] = await audit_entries(engine)
        assert entry.action == "create"
        assert entry.object_type == "automation_rule"
        assert entry.object_id == str(data["id"])
        assert entry.organization_id == 1
        assert entry.actor_sub == "usr_1"
        assert entry.actor_role == "admin"
        assert entry.before is None
        assert entry.after is not None
        assert entry.after["name"] == "Welcome"
        assert entry.request_id is not None


VALIDATION_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown trigger", rule_body(trigger_event="patient.exploded"), ["trigger_event"]),
    ("trigger not a string", rule_body(trigger_event=5), ["trigger_event"]),
    (
        "trigger config above max",
        rule_body(trigger_event="appointment.before_start", trigger_config={"hours_before": 169}),
        ["trigger_config.hours_before"],
    ),
    (
        "trigger config below min",
        rule_body(trigger_event="appointment.before_start", trigger_config={"hours_before": 0}),
        ["trigger_config.hours_before"],
    ),
    (
        "trigger config wrong type",
        rule_body(trigger_event="appointment.after_end", trigger_config={"hours_after": "2"}),
        ["trigger_config.hours_after"],
    ),
    (
        "trigger config bool is not an integer",
        rule_body(trigger_event="appointment.before_start", trigger_config={"hours_before": True}),
        ["trigger_config.hours_before"],
    ),
    (
        "trigger config unknown field",
        rule_body(trigger_event="appointment.before_start", trigger_config={"days": 1}),
        ["trigger_config.days"],
    ),
    (
        "config on a trigger without schema",
        rule_body(trigger_config={"hours_before": 24}),
        ["trigger_config.hours_before"],
    ),
    ("trigger config not an object", rule_body(trigger_config=[1]), ["trigger_config"]),
    ("empty actions", rule_body(actions=[]), ["actions"]),
    ("actions not a list", rule_body(actions={"type": "send_email"}), ["actions"]),
    ("action not an object", rule_body(actions=["send_email"]), ["actions[0]"]),
    (
        "unknown action type",
        rule_body(actions=[{"type": "send_fax", "template": "welcome_patient"}]),
        ["actions[0].type"],
    ),
    ("action without type", rule_body(actions=[{"template": "x"}]), ["actions[0].type"]),
    (
        "missing required action fields",
        rule_body(
            actions=[
                {"type": "send_email", "template": "welcome_patient"},
                {"type": "require_form", "blocking": True},
            ]
        ),
        ["actions[1].form_template_id"],
    ),
    (
        "missing template",
        rule_body(actions=[{"type": "send_email", "delay_minutes": 5}]),
        ["actions[0].template"],
    ),
    (
        "wrong action field type",
        rule_body(actions=[{"type": "require_form", "form_template_id": "42", "blocking": 1}]),
        ["actions[0].form_template_id", "actions[0].blocking"],
    ),
    (
        "value outside enum",
        rule_body(actions=[{"type": "update_segment", "segment_id": 1, "action": "toggle"}]),
        ["actions[0].action"],
    ),
    (
        "unknown field in action",
        rule_body(actions=[{"type": "send_email", "template": "welcome_patient", "cc": "x"}]),
        ["actions[0].cc"],
    ),
    (
        "negative delay",
        rule_body(
            actions=[{"type": "send_email", "template": "welcome_patient", "delay_minutes": -1}]
        ),
        ["actions[0].delay_minutes"],
    ),
    (
        "unknown template",
        rule_body(
            actions=[
                {"type": "send_email", "template": "welcome_patient"},
                {"type": "send_sms", "template": "no_such_template"},
            ]
        ),
        ["actions[1].template"],
    ),
    (
        "malformed conditions",
        rule_body(conditions={"patient.tags": {"like": "vip%"}}),
        ["conditions.patient.tags.like"],
    ),
    ("conditions not an object", rule_body(conditions=["a"]), ["conditions"]),
    ("name empty", rule_body(name=""), ["name"]),
    ("name blank", rule_body(name="   "), ["name"]),
    ("name too long", rule_body(name="x" * 201), ["name"]),
    ("name not a string", rule_body(name=7), ["name"]),
    ("enabled not a boolean", rule_body(enabled="yes"), ["enabled"]),
    ("enabled as 1", rule_body(enabled=1), ["enabled"]),
    ("description not a string", rule_body(description=5), ["description"]),
]

MISSING_CASES = [
    ("name", ["name"]),
    ("trigger_event", ["trigger_event"]),
    ("actions", ["actions"]),
]

MASS_ASSIGNMENT = ["id", "organization_id", "execution_count", "version", "created_at"]


class TestCreateRuleValidation:
    @pytest.mark.parametrize(
        ("body", "fields"),
        [pytest.param(body, fields, id=name) for name, body, fields in VALIDATION_CASES],
    )
    async def test_bad_body_names_each_field(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        body: dict[str, Any],
        fields: list[str],
    ) -> None:
        r = await client.post(RULES, json=body, headers=auth())
        assert r.status_code == 400, r.text
        assert fields_of(r.json()) == fields
        for detail in r.json()["error"]["details"]:
            assert set(detail) == {"field", "message"}
            assert detail["message"]
        assert await audit_entries(engine) == []

    @pytest.mark.parametrize(("missing", "fields"), MISSING_CASES)
    async def test_missing_field(
        self, client: httpx.AsyncClient, auth: Auth, missing: str, fields: list[str]
    ) -> None:
        body = rule_body()
        del body[missing]
        r = await client.post(RULES, json=body, headers=auth())
        assert r.status_code == 400
        assert fields_of(r.json()) == fields

    @pytest.mark.parametrize("field", MASS_ASSIGNMENT)
    async def test_server_owned_fields_are_refused(
        self, client: httpx.AsyncClient, auth: Auth, field: str
    ) -> None:
        r = await client.post(RULES, json=rule_body(**{field: 999}), headers=auth())
        assert r.status_code == 400
        assert fields_of(r.json()) == [field]
        listed = await client.get(RULES, headers=auth())
        assert listed.json()["meta"]["total"] == 0

    async def test_every_problem_in_one_answer(self, client: httpx.AsyncClient, auth: Auth) -> None:
        body = {
            "name": "",
            "trigger_event": "appointment.before_start",
            "trigger_config": {"hours_before": 500},
            "conditions": {"patient.a": {"bogus": 1}},
            "actions": [
                {"type": "send_email", "template": "nope"},
                {"type": "require_form", "blocking": "yes"},
                {"type": "teleport"},
            ],
            "id": 4,
        }
        r = await client.post(RULES, json=body, headers=auth())
        assert r.status_code == 400
        assert sorted(fields_of(r.json())) == sorted(
            [
                "name",
                "id",
                "trigger_config.hours_before",
                "conditions.patient.a.bogus",
                "actions[0].template",
                "actions[1].form_template_id",
                "actions[1].blocking",
                "actions[2].type",
            ]
        )

    @pytest.mark.parametrize(
        "content",
        [
            b"[1, 2]",
            b'"rule"',
            b"null",
            b"42",
            b"{not json",
            b"",
            b"\xff\xfe",
            b'{"name": "x", "trigger_event": "patient.onboarded", "conditions": {"a": NaN}}',
            b'{"name": "x", "trigger_event": "patient.onboarded", "conditions": {"a": 1e400}}',
            # PostgreSQL stores neither NUL nor a lone surrogate.
            b'{"name": "a\\u0000b", "trigger_event": "patient.onboarded", "actions": []}',
            b'{"name": "x", "description": "\\ud800", "trigger_event": "patient.onboarded"}',
            b'{"name": "x", "conditions": {"a\\u0000": 1}}',
            b"[" * 100_000,
        ],
    )
    async def test_body_not_an_object(
        self, client: httpx.AsyncClient, auth: Auth, content: bytes
    ) -> None:
        headers = {**auth(), "Content-Type": "application/json"}
        r = await client.post(RULES, content=content, headers=headers)
        assert r.status_code == 400, r.text
        assert fields_of(r.json()) == ["body"]


class TestGetRule:
    async def test_missing_rule(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(f"{RULES}/999", headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "automation_rule_not_found"

    @pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "99999999999999999999999", "%20"])
    async def test_path_id_that_is_not_an_id(
        self, client: httpx.AsyncClient, auth: Auth, raw: str
    ) -> None:
        await create_rule(client, auth)
        for method in ("GET", "PUT", "DELETE"):
            json = {"name": "x"} if method == "PUT" else None
            r = await client.request(method, f"{RULES}/{raw}", json=json, headers=auth())
            assert r.status_code == 404, (method, raw, r.text)
            assert r.json()["error"]["code"] == "automation_rule_not_found"


class TestListRules:
    async def test_filters_and_order(self, client: httpx.AsyncClient, auth: Auth) -> None:
        a = await create_rule(client, auth, name="a")
        b = await create_rule(
            client, auth, name="b", trigger_event="appointment.booked", enabled=False
        )
        c = await create_rule(client, auth, name="c", trigger_event="appointment.booked")

        async def ids(**params: Any) -> tuple[list[int], int]:
            r = await client.get(RULES, params=params, headers=auth("specialist"))
            assert r.status_code == 200, r.text
            body = r.json()
            return [rule["id"] for rule in body["data"]], body["meta"]["total"]

        assert await ids() == ([a["id"], b["id"], c["id"]], 3)
        assert await ids(trigger_event="appointment.booked") == ([b["id"], c["id"]], 2)
        assert await ids(enabled="false") == ([b["id"]], 1)
        assert await ids(enabled="true") == ([a["id"], c["id"]], 2)
        assert await ids(trigger_event="appointment.booked", enabled="true") == ([c["id"]], 1)
        assert await ids(trigger_event="invoice.overdue") == ([], 0)

    async def test_paging(self, client: httpx.AsyncClient, auth: Auth) -> None:
        made = [(await create_rule(client, auth, name=f"r{i}"))["id"] for i in range(5)]
        r = await client.get(RULES, params={"page": 2, "limit": 2}, headers=auth())
        body = r.json()
        assert [rule["id"] for rule in body["data"]] == made[2:4]
        assert body["meta"] == {"total": 5, "page": 2, "limit": 2}
        r = await client.get(RULES, params={"page": 4, "limit": 2}, headers=auth())
        assert r.json() == {"data": [], "meta": {"total": 5, "page": 4, "limit": 2}}
        r = await client.get(RULES, headers=auth())
        assert r.json()["meta"] == {"total": 5, "page": 1, "limit": 20}

    @pytest.mark.parametrize(
        "params",
        [
            {"page": 0},
            {"page": -1},
            {"page": "x"},
            {"limit": 0},
            {"limit": 101},
            {"limit": "many"},
            {"enabled": "maybe"},
        ],
    )
    async def test_bad_query(
        self, client: httpx.AsyncClient, auth: Auth, params: dict[str, Any]
    ) -> None:
        r = await client.get(RULES, params=params, headers=auth())
        assert r.status_code == 400
        assert fields_of(r.json()) == list(params)


# The seed's Update Automation Rule request.
SEED_UPDATE: dict[str, Any] = {
    "name": "Updated Rule Name",
    "enabled": False,
    "actions": [{"type": "send_email", "template": "new_template"}],
}


class TestUpdateRule:
    async def test_partial_update(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
    ) -> None:
        created = await create_rule(client, auth, **SEED_GDPR_WELCOME)
        clock.advance(hours=1)
        # The seed's update example, word for word: 200, though no template is called
        # new_template (SPEC §4 refuses an unknown template at rule creation only).
        body = SEED_UPDATE
        r = await client.put(f"{RULES}/{created['id']}", json=body, headers=auth())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["name"] == "Updated Rule Name"
        assert data["enabled"] is False
        assert data["actions"] == body["actions"]
        assert data["version"] == 2
        assert data["updated_at"] == "2025-02-15T11:00:00Z"
        assert data["created_at"] == created["created_at"]
        unchanged = {"description", "trigger_event", "trigger_config", "conditions"}
        assert {k: data[k] for k in unchanged} == {k: created[k] for k in unchanged}

        got = await client.get(f"{RULES}/{created['id']}", headers=auth())
        assert got.json()["data"] == data

    async def test_version_rises_on_every_update(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule_id = (await create_rule(client, auth))["id"]
        for expected in (2, 3, 4):
            r = await client.put(f"{RULES}/{rule_id}", json={"enabled": False}, headers=auth())
            assert r.json()["data"]["version"] == expected

    async def test_changing_trigger_starts_from_its_defaults(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule_id = (
            await create_rule(
                client,
                auth,
                trigger_event="appointment.before_start",
                trigger_config={"hours_before": 2},
            )
        )["id"]
        r = await client.put(
            f"{RULES}/{rule_id}", json={"trigger_event": "appointment.after_end"}, headers=auth()
        )
        assert r.json()["data"]["trigger_config"] == {"hours_after": 24}
        r = await client.put(
            f"{RULES}/{rule_id}", json={"trigger_config": {"hours_after": 3}}, headers=auth()
        )
        assert r.json()["data"]["trigger_config"] == {"hours_after": 3}
        r = await client.put(
            f"{RULES}/{rule_id}", json={"trigger_config": {"hours_before": 3}}, headers=auth()
        )
        assert fields_of(r.json()) == ["trigger_config.hours_before"]

    async def test_null_conditions_mean_none(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule_id = (await create_rule(client, auth, conditions={"patient.tags": "vip"}))["id"]
        r = await client.put(f"{RULES}/{rule_id}", json={"conditions": None}, headers=auth())
        assert r.json()["data"]["conditions"] == {}

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"name": None}, ["name"]),
            ({"name": ""}, ["name"]),
            ({"enabled": None}, ["enabled"]),
            ({"trigger_event": "nope"}, ["trigger_event"]),
            ({"actions": []}, ["actions"]),
            ({"actions": None}, ["actions"]),
            ({"actions": [{"type": "send_email"}]}, ["actions[0].template"]),
            ({"conditions": {"patient.x": {"gt": [1]}}}, ["conditions.patient.x.gt"]),
            ({"version": 9}, ["version"]),
            ({"execution_count": 0}, ["execution_count"]),
            ({"organization_id": 2}, ["organization_id"]),
            ({"id": 5, "name": "x"}, ["id"]),
        ],
    )
    async def test_validation_as_on_create(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        body: dict[str, Any],
        fields: list[str],
    ) -> None:
        created = await create_rule(client, auth)
        r = await client.put(f"{RULES}/{created['id']}", json=body, headers=auth())
        assert r.status_code == 400, r.text
        assert fields_of(r.json()) == fields
        got = await client.get(f"{RULES}/{created['id']}", headers=auth())
        assert got.json()["data"] == created

    async def test_body_not_an_object(self, client: httpx.AsyncClient, auth: Auth) -> None:
        created = await create_rule(client, auth)
        r = await client.put(f"{RULES}/{created['id']}", json=[{"name": "x"}], headers=auth())
        assert r.status_code == 400
        assert fields_of(r.json()) == ["body"]

    async def test_missing_rule_is_404_before_the_body_is_judged(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.put(f"{RULES}/41", json={"name": ""}, headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "automation_rule_not_found"

    async def test_a_body_not_an_object_is_400_even_for_a_missing_rule(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.put(f"{RULES}/41", json=[1, 2], headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"
        assert fields_of(r.json()) == ["body"]

    async def test_creation_refuses_the_template_an_update_may_name(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.post(RULES, json={**SEED_FIRST_VIDEO, **SEED_UPDATE}, headers=auth())
        assert r.status_code == 400
        assert fields_of(r.json()) == ["actions[0].template"]

    async def test_audit_entry_holds_changed_fields(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        rule_id = (await create_rule(client, auth))["id"]
        r = await client.put(
            f"{RULES}/{rule_id}", json={"name": "Renamed"}, headers=auth(sub="usr_9")
        )
        assert r.status_code == 200
        entry = (await audit_entries(engine))[-1]
        assert entry.action == "update"
        assert entry.object_id == str(rule_id)
        assert entry.actor_sub == "usr_9"
        assert entry.before == {"name": "Welcome", "version": 1}
        assert entry.after == {"name": "Renamed", "version": 2}


class TestDeleteRule:
    async def test_delete_then_404(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        rule_id = (await create_rule(client, auth))["id"]
        r = await client.delete(f"{RULES}/{rule_id}", headers=auth())
        assert r.status_code == 204
        assert r.content == b""
        for method in ("GET", "DELETE"):
            again = await client.request(method, f"{RULES}/{rule_id}", headers=auth())
            assert again.status_code == 404
            assert again.json()["error"]["code"] == "automation_rule_not_found"
        entry = (await audit_entries(engine))[-1]
        assert entry.action == "delete"
        assert entry.object_id == str(rule_id)
        assert entry.before is not None
        assert entry.before["name"] == "Welcome"
        assert entry.after is None

    async def test_execution_history_outlives_the_rule(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        from careflow.executions.models import Execution

        rule = await create_rule(client, auth)
        maker = create_sessionmaker(engine)
        async with maker() as session:
            execution = Execution(
                organization_id=1,
                automation_rule_id=rule["id"],
                automation_rule_name=rule["name"],
                rule_version=1,
                trigger_event="patient.onboarded",
                trigger_entity_type="patient",
                trigger_entity_id=100,
                occurrence_key="evt-1",
                status="success",
                actions=rule["actions"],
                context={},
                executed_at=clock.now(),
            )
            session.add(execution)
            await session.commit()
        r = await client.delete(f"{RULES}/{rule['id']}", headers=auth())
        assert r.status_code == 204
        async with maker() as session:
            kept = await session.get(Execution, execution.id)
            assert kept is not None
            assert kept.automation_rule_id is None
            assert kept.automation_rule_name == "Welcome"


class TestEnabledRulesFor:
    async def test_only_enabled_rules_of_that_org_and_trigger(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        wanted = await create_rule(client, auth, trigger_event="appointment.booked")
        await create_rule(client, auth, trigger_event="appointment.booked", enabled=False)
        await create_rule(client, auth, trigger_event="appointment.cancelled")
        await create_rule(client, auth, org=2, trigger_event="appointment.booked")
        async with create_sessionmaker(engine)() as session:
            rules = await enabled_rules_for(session, 1, "appointment.booked")
        assert [r.id for r in rules] == [wanted["id"]]
        assert all(isinstance(r, RuleSnapshot) for r in rules)

    async def test_cached_set_follows_every_write(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(engine)

        async def names() -> list[str]:
            async with maker() as session:
                return [r.name for r in await enabled_rules_for(session, 1, "appointment.booked")]

        first = await create_rule(client, auth, name="one", trigger_event="appointment.booked")
        assert await names() == ["one"]
        assert await names() == ["one"]  # served from the cache
        await client.put(f"{RULES}/{first['id']}", json={"name": "uno"}, headers=auth())
        assert await names() == ["uno"]
        second = await create_rule(client, auth, name="two", trigger_event="appointment.booked")
        assert await names() == ["uno", "two"]
        await client.put(f"{RULES}/{second['id']}", json={"enabled": False}, headers=auth())
        assert await names() == ["uno"]
        await client.put(
            f"{RULES}/{first['id']}",
            json={"trigger_event": "appointment.cancelled"},
            headers=auth(),
        )
        assert await names() == []
        await client.delete(f"{RULES}/{first['id']}", headers=auth())
        async with maker() as session:
            assert await enabled_rules_for(session, 1, "appointment.cancelled") == ()


class TestIdempotentCreate:
    async def test_same_key_same_body_replays(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        headers = {**auth(), "Idempotency-Key": "create-welcome-1"}
        first = await client.post(RULES, json=rule_body(), headers=headers)
        again = await client.post(RULES, json=rule_body(), headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        listed = await client.get(RULES, headers=auth())
        assert listed.json()["meta"]["total"] == 1
        assert len(await audit_entries(engine)) == 1

    async def test_same_key_other_body_is_refused(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        headers = {**auth(), "Idempotency-Key": "k"}
        assert (await client.post(RULES, json=rule_body(), headers=headers)).status_code == 201
        r = await client.post(RULES, json=rule_body(name="Other"), headers=headers)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "idempotency_key_reused"

    async def test_keys_are_per_organisation(self, client: httpx.AsyncClient, auth: Auth) -> None:
        for org in (1, 2):
            headers = {**auth(org=org), "Idempotency-Key": "shared"}
            r = await client.post(RULES, json=rule_body(), headers=headers)
            assert r.status_code == 201
            assert "idempotent-replayed" not in r.headers
            assert r.json()["data"]["organization_id"] == org

    async def test_a_refused_body_does_not_use_up_the_key(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        headers = {**auth(), "Idempotency-Key": "retry-me"}
        bad = await client.post(RULES, json=rule_body(trigger_event="nope"), headers=headers)
        assert bad.status_code == 400
        good = await client.post(RULES, json=rule_body(), headers=headers)
        assert good.status_code == 201


class TestIdsAreNeverReused:
    async def test_a_deleted_newest_rule_keeps_its_id_to_itself(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        """On SQLite too (AUTOINCREMENT): the old id answers 404, and the audit log's entries
        under it are all the deleted rule's."""
        first = await create_rule(client, auth)
        newest = await create_rule(client, auth, name="Newest")
        r = await client.delete(f"{RULES}/{newest['id']}", headers=auth())
        assert r.status_code == 204
        again = await create_rule(client, auth, name="After the delete")
        assert again["id"] not in (first["id"], newest["id"])
        r = await client.get(f"{RULES}/{newest['id']}", headers=auth())
        assert r.status_code == 404
        async with create_sessionmaker(engine)() as session:
            entries = list(
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.object_id == str(newest["id"]))
                )
            )
        assert sorted(e.action for e in entries) == ["create", "delete"]


class TestTemplateKeys:
    @pytest.mark.parametrize("key", ["x" * 101, "bad key", "-leading-dash", "new\n"])
    async def test_a_key_no_template_can_have_is_refused_on_create_and_update(
        self, client: httpx.AsyncClient, auth: Auth, key: str
    ) -> None:
        actions = [{"type": "send_email", "template": key}]
        r = await client.post(RULES, json=rule_body(actions=actions), headers=auth())
        assert r.status_code == 400
        assert "actions[0].template" in {d["field"] for d in r.json()["error"]["details"]}
        created = await create_rule(client, auth)
        r = await client.put(f"{RULES}/{created['id']}", json={"actions": actions}, headers=auth())
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"] == [
            {"field": "actions[0].template", "message": TEMPLATE_KEY_MESSAGE}
        ]

    async def test_an_update_may_still_name_a_template_not_made_yet(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        """The seed's PUT example names `new_template`: a key a template can have."""
        created = await create_rule(client, auth)
        actions = [{"type": "send_email", "template": "new_template", "delay_minutes": 60}]
        r = await client.put(f"{RULES}/{created['id']}", json={"actions": actions}, headers=auth())
        assert r.status_code == 200, r.text
