"""Careless input is refused where it is sent, naming the field, rather than accepted and then
silently doing nothing: a 400 ``validation_error`` (a 409 ``event_id_conflict`` for a reused
``event_id``) whose details name the bad field and never quote its value.

One table per kind of input: conditions of automation and pathway rules, the fields careflow
reads from events and entity snapshots, and redelivered event ids. An event is sent both on
the ingestion fast path (``events/ingest_middleware.py``) and through the route (a query
string sends it there): the two answers must be the same.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.database import count
from tests.fixtures.factories import (
    EVENTS,
    PATHWAY_RULES,
    PATIENT,
    RULES,
    create_rule,
    pathway_rule_body,
    rule_body,
)
from tests.security.conftest import Auth


def _details(r: httpx.Response) -> list[dict[str, str]]:
    details: list[dict[str, str]] = r.json()["error"]["details"]
    return details


def _fields(r: httpx.Response) -> list[str]:
    return [d["field"] for d in _details(r)]


def _quoted(value: Any, r: httpx.Response) -> bool:
    """Whether an error quotes a bad address or zone, values that could be patient data
    (``false`` or a date may well appear in a message saying what is expected)."""
    return isinstance(value, str) and ("@" in value or "/" in value) and value in r.text


def _nested(levels: int) -> dict[str, Any]:
    """A condition ``levels`` deep: the top object is level 1, each ``all`` adds one."""
    condition: dict[str, Any] = {"patient.tags": "vip"}
    for _ in range(levels - 1):
        condition = {"all": [condition]}
    return condition


def _entries(n: int) -> dict[str, Any]:
    return {f"patient.field_{i}": i for i in range(n)}


# --- conditions ---------------------------------------------------------------------------

# (case, trigger, conditions, the field named, words the message must hold)
RULE_CONDITIONS = [
    ("not a path at all", "patient.onboarded", {"foo": "bar"}, "conditions.foo", ["patient"]),
    ("unknown entity", "patient.onboarded", {"foo.bar": 1}, "conditions.foo.bar", ["'foo'"]),
    (
        "entity of another trigger",
        "patient.onboarded",
        {"invoice.amount": {"gt": 100}},
        "conditions.invoice.amount",
        ["'invoice'", "patient"],
    ),
    (
        "inside any",
        "appointment.booked",
        {"any": [{"appointment.type": "video"}, {"invoice.amount": 1}]},
        "conditions.any[1].invoice.amount",
        ["appointment, patient"],
    ),
    (
        "inside not",
        "form.completed",
        {"not": {"appointment.type": "video"}},
        "conditions.not.appointment.type",
        ["form, patient"],
    ),
    ("nine levels", "patient.onboarded", _nested(9), "conditions" + ".all[0]" * 8, ["8"]),
    ("101 entries", "patient.onboarded", _entries(101), "conditions", ["101", "100"]),
]


class TestRuleConditions:
    @pytest.mark.parametrize(
        ("trigger", "conditions", "field", "words"),
        [case[1:] for case in RULE_CONDITIONS],
        ids=[case[0] for case in RULE_CONDITIONS],
    )
    async def test_automation_rule_refused(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: Any,
        trigger: str,
        conditions: dict[str, Any],
        field: str,
        words: list[str],
    ) -> None:
        body = rule_body(trigger_event=trigger, conditions=conditions)
        r = await client.post(RULES, json=body, headers=auth())
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "validation_error"
        [detail] = [d for d in _details(r) if d["field"] == field]
        for word in words:
            assert word in detail["message"]

    @pytest.mark.parametrize(
        ("trigger", "conditions", "field", "words"),
        [case[1:] for case in RULE_CONDITIONS],
        ids=[case[0] for case in RULE_CONDITIONS],
    )
    async def test_pathway_rule_refused(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        trigger: str,
        conditions: dict[str, Any],
        field: str,
        words: list[str],
    ) -> None:
        body = pathway_rule_body(trigger_type=trigger, conditions=conditions)
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
        [detail] = [d for d in _details(r) if d["field"] == field]
        for word in words:
            assert word in detail["message"]

    async def test_pathway_message_names_the_named_fields(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        body = pathway_rule_body(conditions={"invoice.type": "dental"})
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert r.status_code == 400, r.text
        [detail] = _details(r)
        assert detail["field"] == "conditions.invoice.type"
        assert "appointment, patient" in detail["message"]
        assert "appointment_type_ids" in detail["message"]

    @pytest.mark.parametrize(
        ("trigger", "conditions"),
        [
            ("patient.onboarded", {"patient.tags": "vip"}),
            ("appointment.booked", {"appointment.type": "video", "patient.tags": "vip"}),
            ("appointment.before_start", {"appointment.type": "video"}),
            ("invoice.overdue", {"invoice.amount": {"gt": 10}, "patient.tags": "vip"}),
            ("form.completed", {"form.form_template_id": 3}),
            ("patient.onboarded", _nested(8)),
            ("patient.onboarded", _entries(100)),
        ],
    )
    async def test_what_the_context_offers_is_accepted(
        self, client: httpx.AsyncClient, auth: Auth, trigger: str, conditions: dict[str, Any]
    ) -> None:
        body = rule_body(trigger_event=trigger, conditions=conditions)
        r = await client.post(RULES, json=body, headers=auth())
        assert r.status_code == 201, r.text

    @pytest.mark.parametrize(
        ("trigger", "conditions"),
        [
            ("appointment.booked", {"appointment_type_ids": ["t1"], "patient.tags": "vip"}),
            ("message.received", {"channels": ["sms"], "message.channel": "sms"}),
            ("patient.onboarded", _nested(8)),
        ],
    )
    async def test_pathway_rule_accepted(
        self, client: httpx.AsyncClient, auth: Auth, trigger: str, conditions: dict[str, Any]
    ) -> None:
        body = pathway_rule_body(trigger_type=trigger, conditions=conditions)
        r = await client.post(PATHWAY_RULES, json=body, headers=auth())
        assert r.status_code == 201, r.text

    async def test_moving_a_rule_to_a_trigger_without_its_entities_is_refused(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        rule = await create_rule(
            client,
            auth,
            rule_body(trigger_event="appointment.booked", conditions={"appointment.type": "v"}),
        )
        r = await client.put(
            f"{RULES}/{rule['id']}", json={"trigger_event": "patient.onboarded"}, headers=auth()
        )
        assert r.status_code == 400, r.text
        assert _fields(r) == ["conditions.appointment.type"]
        # The same move with conditions that fit the new trigger is accepted.
        r = await client.put(
            f"{RULES}/{rule['id']}",
            json={"trigger_event": "patient.onboarded", "conditions": {"patient.tags": "x"}},
            headers=auth(),
        )
        assert r.status_code == 200, r.text

    async def test_updates_are_checked_too(self, client: httpx.AsyncClient, auth: Auth) -> None:
        rule = await create_rule(client, auth)
        r = await client.put(
            f"{RULES}/{rule['id']}", json={"conditions": {"foo": "bar"}}, headers=auth()
        )
        assert r.status_code == 400, r.text
        assert _fields(r) == ["conditions.foo"]

        created = await client.post(PATHWAY_RULES, json=pathway_rule_body(), headers=auth())
        assert created.status_code == 201, created.text
        r = await client.patch(
            f"{PATHWAY_RULES}/{created.json()['data']['id']}",
            json={"conditions": {"foo.bar": 1}},
            headers=auth(),
        )
        assert r.status_code == 400, r.text
        assert _fields(r) == ["conditions.foo.bar"]


# --- fields careflow reads ----------------------------------------------------------------

BAD_PATIENT_FIELDS = [
    ("email", 12345),
    ("email", "not-an-address"),
    ("email", "ada@example.com, bob@example.com"),
    ("email", "Ada Lovelace <ada@example.com>"),
    ("email", "someone@"),
    ("email", ""),
    ("email", ["ada@example.com"]),
    ("phone", 447700900123),
    ("phone", {"mobile": "+447700900123"}),
    ("timezone", "Mars/Olympus_Mons"),
    ("timezone", "../../etc/passwd"),
    ("timezone", 1),
    ("email_opt_out", "yes"),
    ("email_opt_out", 1),
    ("sms_opt_out", "false"),
    ("sms_opt_out", 0),
]
BAD_APPOINTMENT_FIELDS = [
    ("starts_at", "2025-02-20T09:00:00"),
    ("starts_at", "tomorrow"),
    ("starts_at", 1740042000),
    ("ends_at", "2025-02-20"),
]
GOOD_PATIENT = {
    **PATIENT,
    "email": "ada@example.com",
    "phone": "+447700900123",
    "timezone": "America/New_York",
    "email_opt_out": False,
    "sms_opt_out": True,
}


def _appointment(**fields: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "patient_id": PATIENT["id"],
        "starts_at": "2030-03-01T09:00:00+01:00",
        **fields,
    }


def _event_cases() -> list[Any]:
    cases = [
        pytest.param(
            "patient.onboarded",
            {"patient": {**PATIENT, name: value}},
            f"data.patient.{name}",
            value,
            id=f"patient.{name}={value!r}",
        )
        for name, value in BAD_PATIENT_FIELDS
    ]
    cases += [
        pytest.param(
            "appointment.booked",
            {"appointment": _appointment(**{name: value})},
            f"data.appointment.{name}",
            value,
            id=f"appointment.{name}={value!r}",
        )
        for name, value in BAD_APPOINTMENT_FIELDS
    ]
    # A patient carried by an event about something else is checked the same way.
    cases.append(
        pytest.param(
            "appointment.booked",
            {"appointment": _appointment(), "patient": {**PATIENT, "email": 12345}},
            "data.patient.email",
            12345,
            id="patient beside an appointment",
        )
    )
    return cases


class TestFieldsCareflowReads:
    @pytest.mark.parametrize("route", [False, True], ids=["fast path", "route"])
    @pytest.mark.parametrize(("type_", "data", "field", "value"), _event_cases())
    async def test_event_refused(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: Any,
        route: bool,
        type_: str,
        data: dict[str, Any],
        field: str,
        value: Any,
    ) -> None:
        from careflow.events.models import Event

        url = f"{EVENTS}?via=route" if route else EVENTS
        body = {"event_id": "e-1", "type": type_, "data": data}
        r = await client.post(url, json=body, headers=auth("service"))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert _fields(r) == [field]
        assert not _quoted(value, r)  # the field is named, its value never quoted
        assert await count(engine, Event) == 0

    async def test_both_paths_answer_alike(self, client: httpx.AsyncClient, auth: Auth) -> None:
        body = {
            "type": "patient.onboarded",
            "data": {"patient": {**PATIENT, "email": 5, "timezone": "Nowhere", "sms_opt_out": 1}},
        }
        fast = await client.post(EVENTS, json=body, headers=auth("service"))
        routed = await client.post(f"{EVENTS}?via=route", json=body, headers=auth("service"))
        assert fast.status_code == routed.status_code == 400
        assert fast.json() == routed.json()
        assert _fields(fast) == [
            "data.patient.email",
            "data.patient.timezone",
            "data.patient.sms_opt_out",
        ]

    @pytest.mark.parametrize(("name", "value"), BAD_PATIENT_FIELDS)
    async def test_patient_snapshot_refused(
        self, client: httpx.AsyncClient, auth: Auth, name: str, value: Any
    ) -> None:
        r = await client.put(
            "/v1/entities/patient/100", json={**PATIENT, name: value}, headers=auth("service")
        )
        assert r.status_code == 400, r.text
        assert _fields(r) == [name]
        assert not _quoted(value, r)

    @pytest.mark.parametrize(("name", "value"), BAD_APPOINTMENT_FIELDS)
    async def test_appointment_snapshot_refused(
        self, client: httpx.AsyncClient, auth: Auth, name: str, value: Any
    ) -> None:
        r = await client.put(
            "/v1/entities/appointment/7", json=_appointment(**{name: value}), headers=auth()
        )
        assert r.status_code == 400, r.text
        assert _fields(r) == [name]

    async def test_well_typed_fields_and_nulls_are_accepted(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.post(
            EVENTS,
            json={"type": "patient.onboarded", "data": {"patient": GOOD_PATIENT}},
            headers=auth("service"),
        )
        assert r.status_code == 202, r.text
        nulls = {**PATIENT, "email": None, "phone": None, "timezone": None, "sms_opt_out": None}
        r = await client.put("/v1/entities/patient/100", json=nulls, headers=auth("service"))
        assert r.status_code == 200, r.text
        r = await client.put(
            "/v1/entities/appointment/7",
            json=_appointment(ends_at="2030-03-01T08:30:00Z"),
            headers=auth("service"),
        )
        assert r.status_code == 200, r.text


# --- event ids ----------------------------------------------------------------------------

FIRST: dict[str, Any] = {
    "event_id": "evt-1",
    "type": "patient.onboarded",
    "occurred_at": "2025-02-15T09:00:00Z",
    "data": {"patient": {"id": 100, "email": "ada@example.com", "tags": ["vip"], "vip": True}},
}


def _with(**changes: Any) -> dict[str, Any]:
    body = {**FIRST, "data": {"patient": {**FIRST["data"]["patient"]}}}
    for key, value in changes.items():
        if key.startswith("patient_"):
            body["data"]["patient"][key.removeprefix("patient_")] = value
        else:
            body[key] = value
    return body


CONFLICTS = [
    pytest.param(_with(type="patient.updated"), id="another type"),
    pytest.param(_with(patient_email="bob@example.com"), id="another field value"),
    pytest.param(_with(patient_vip=1), id="1 for true"),
    pytest.param(_with(patient_tags=["vip", "new"]), id="another list"),
    pytest.param(_with(patient_extra="x"), id="one field more"),
    pytest.param(_with(occurred_at="2025-02-15T09:00:01Z"), id="another occurred_at"),
]
REPLAYS = [
    pytest.param(_with(), id="the same body"),
    pytest.param(
        {
            "data": {
                "patient": {"vip": True, "tags": ["vip"], "email": "ada@example.com", "id": 100}
            },
            "type": "patient.onboarded",
            "event_id": "evt-1",
            "occurred_at": "2025-02-15T10:00:00+01:00",
        },
        id="keys reordered, the same instant in another offset",
    ),
    pytest.param({k: v for k, v in _with().items() if k != "occurred_at"}, id="no occurred_at"),
]


class TestEventIds:
    @pytest.mark.parametrize("route", [False, True], ids=["fast path", "route"])
    @pytest.mark.parametrize("again", CONFLICTS)
    async def test_another_body_is_a_conflict(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: Any,
        route: bool,
        again: dict[str, Any],
    ) -> None:
        from careflow.events.models import Event
        from careflow.jobs.models import Job

        first = await client.post(EVENTS, json=FIRST, headers=auth("service"))
        assert first.status_code == 202, first.text
        url = f"{EVENTS}?via=route" if route else EVENTS
        r = await client.post(url, json=again, headers=auth("service"))
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "event_id_conflict"
        [detail] = _details(r)
        assert detail["field"] == "event_id"
        assert f"event {first.json()['data']['id']} (patient.onboarded)" in detail["message"]
        assert "ada@example.com" not in r.text and "bob@example.com" not in r.text
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1

    @pytest.mark.parametrize("route", [False, True], ids=["fast path", "route"])
    @pytest.mark.parametrize("again", REPLAYS)
    async def test_the_same_event_is_the_replay(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: Any,
        route: bool,
        again: dict[str, Any],
    ) -> None:
        from careflow.events.models import Event

        first = await client.post(EVENTS, json=FIRST, headers=auth("service"))
        assert first.status_code == 202, first.text
        url = f"{EVENTS}?via=route" if route else EVENTS
        r = await client.post(url, json=again, headers=auth("service"))
        assert r.status_code == 200, r.text
        assert r.json() == first.json()
        assert await count(engine, Event) == 1

    async def test_under_an_idempotency_key(self, client: httpx.AsyncClient, auth: Auth) -> None:
        first = await client.post(EVENTS, json=FIRST, headers=auth("service"))
        assert first.status_code == 202, first.text
        headers = {**auth("service"), "Idempotency-Key": "k-1"}
        r = await client.post(EVENTS, json=_with(type="patient.updated"), headers=headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "event_id_conflict"
        r = await client.post(
            EVENTS, json=FIRST, headers={**auth("service"), "Idempotency-Key": "k-2"}
        )
        assert r.status_code == 200, r.text
