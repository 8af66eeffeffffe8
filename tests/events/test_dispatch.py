"""The engine end to end over HTTP: event → dispatch → executions → actions → effects."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update

from careflow.db import create_sessionmaker
from careflow.events.dispatch import dispatch_event
from careflow.events.models import Event, PatientMilestone
from careflow.executions.models import Execution, ExecutionAction
from careflow.forms.models import Form
from careflow.jobs.models import Job
from careflow.messages.models import Message
from tests.fixtures.database import count
from tests.fixtures.factories import (
    FIRST_VIDEO,
    GDPR_WELCOME,
    PATIENT,
    RULES,
    booked,
    create_rule,
    executions,
    onboarded,
    post_event,
    rule_body,
)


class TestNewPatientRule:
    async def test_forms_and_email(self, client, auth, drain, smtp, engine) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        posted = await post_event(client, auth, "patient.onboarded", onboarded(), event_id="e1")
        # Two jobs: the dispatch, which runs both require_form actions, then the email.
        assert await drain() == 2

        [execution] = await executions(client, auth)
        assert execution["automation_rule_id"] == created["id"]
        assert execution["automation_rule_name"] == "New Patient GDPR & Welcome"
        assert execution["trigger_event"] == "patient.onboarded"
        assert execution["trigger_entity_type"] == "patient"
        assert execution["trigger_entity_id"] == 100
        assert execution["status"] == "success"
        assert execution["error_message"] is None
        assert execution["executed_at"] == "2025-02-15T10:00:00Z"
        assert execution["event_id"] == posted["data"]["id"]
        assert execution["rule_version"] == 1
        steps = execution["actions_executed"]
        assert [(s["action"], s["status"]) for s in steps] == [
            ("require_form", "success"),
            ("require_form", "success"),
            ("send_email", "success"),
        ]
        assert isinstance(steps[0]["form_id"], int) and isinstance(steps[1]["form_id"], int)
        assert steps[2]["email_id"].startswith("msg_")

        # The seed's effects: two blocking forms gate the patient; one welcome email went out.
        gate = await client.get("/v1/patients/100/gate", headers=auth("service"))
        assert gate.status_code == 200
        assert gate.json()["data"]["blocked"] is True
        assert sorted(f["form_template_id"] for f in gate.json()["data"]["pending_forms"]) == [
            42,
            43,
        ]
        assert len(smtp.sink.messages) == 1
        assert smtp.sink.messages[0].rcpt_tos == [PATIENT["email"]]

        got = (await client.get(RULES + f"/{created['id']}", headers=auth())).json()["data"]
        assert got["execution_count"] == 1
        assert got["last_executed_at"] == "2025-02-15T10:00:00Z"

    async def test_repeated_event_id_runs_nothing_again(
        self, client, auth, drain, smtp, engine
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await post_event(client, auth, "patient.onboarded", onboarded(), event_id="e1")
        await drain()
        await post_event(client, auth, "patient.onboarded", onboarded(), event_id="e1", expect=200)
        assert await drain() == 0
        assert await count(engine, Execution) == 1
        assert await count(engine, Form) == 2
        assert len(smtp.sink.messages) == 1

    async def test_delayed_action_keeps_execution_running(
        self, client, auth, drain, smtp, clock
    ) -> None:
        body = rule_body(GDPR_WELCOME)
        body["actions"][2]["delay_minutes"] = 5
        await create_rule(client, auth, body)
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        [execution] = await executions(client, auth)
        assert execution["status"] == "running"
        assert len(execution["actions_executed"]) == 2  # the email is still to come
        assert smtp.sink.messages == []

        clock.advance(minutes=4)
        assert await drain() == 0
        clock.advance(minutes=1)
        assert await drain() == 1
        [execution] = await executions(client, auth)
        assert execution["status"] == "success"
        assert len(smtp.sink.messages) == 1

    async def test_rule_of_another_org_or_disabled_does_not_run(
        self, client, auth, drain, engine
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME, org=2)
        await create_rule(client, auth, rule_body(GDPR_WELCOME, enabled=False))
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        assert await count(engine, Execution) == 0
        assert await count(engine, Event, Event.status == "processed") == 1


class TestConditions:
    async def test_non_matching_rule_is_skipped_and_not_counted(
        self, client, auth, drain, engine
    ) -> None:
        vip = await create_rule(
            client,
            auth,
            rule_body(GDPR_WELCOME, name="VIP only", conditions={"patient.tags": "vip"}),
        )
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        [execution] = await executions(client, auth)
        assert execution["status"] == "skipped"
        assert execution["actions_executed"] == []
        assert execution["error_message"] is None
        assert execution["finished_at"] == "2025-02-15T10:00:00Z"
        assert await count(engine, Form) == 0
        assert await count(engine, Job) == 0
        got = (await client.get(RULES + f"/{vip['id']}", headers=auth())).json()["data"]
        assert got["execution_count"] == 0
        assert got["last_executed_at"] is None

    async def test_appointment_context_joins_stored_patient(self, client, auth, drain) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "VIP bookings",
                "trigger_event": "appointment.booked",
                "conditions": {"patient.tags": "vip", "appointment.type": "video"},
                "actions": [{"type": "update_segment", "segment_id": 7, "action": "add"}],
            },
        )
        response = await client.put(
            "/v1/entities/patient/100", json={**PATIENT, "tags": ["vip"]}, headers=auth("service")
        )
        assert response.status_code == 200
        await post_event(client, auth, "appointment.booked", booked(50))
        await post_event(client, auth, "appointment.booked", booked(51, patient_id=101))
        await drain()
        by_entity = {e["trigger_entity_id"]: e for e in await executions(client, auth)}
        assert by_entity[50]["status"] == "success"
        assert by_entity[50]["trigger_entity_type"] == "appointment"
        assert by_entity[51]["status"] == "skipped"  # patient 101 is unknown: no tags
        members = await client.get("/v1/segments/7/members", headers=auth())
        assert [m["patient_id"] for m in members.json()["data"]] == [100]


class TestDerivedTriggers:
    async def test_first_booked_fires_once_per_patient(self, client, auth, drain, engine) -> None:
        await create_rule(client, auth, FIRST_VIDEO)
        await post_event(client, auth, "appointment.booked", booked(50))
        await post_event(client, auth, "appointment.booked", booked(51))
        # A producer-sent first_booked for the same patient counts as already fired.
        await post_event(client, auth, "appointment.first_booked", booked(52))
        await drain()
        [execution] = await executions(client, auth)
        assert execution["trigger_event"] == "appointment.first_booked"
        assert execution["trigger_entity_id"] == 50
        assert execution["status"] == "success"
        assert await count(engine, PatientMilestone) == 1

        # Another patient has a first booking of their own.
        await post_event(client, auth, "appointment.booked", booked(60, patient_id=200))
        await drain()
        assert len(await executions(client, auth)) == 2

    async def test_producer_sent_first_login_counts_once(self, client, auth, drain) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "First login",
                "trigger_event": "patient.first_login",
                "actions": [{"type": "update_segment", "segment_id": 3, "action": "add"}],
            },
        )
        await post_event(client, auth, "patient.first_login", onboarded())
        await post_event(client, auth, "patient.logged_in", onboarded())
        await post_event(client, auth, "patient.logged_in", onboarded({"id": 101}))
        await post_event(client, auth, "patient.logged_in", onboarded({"id": 101}))
        await drain()
        runs = await executions(client, auth)
        assert sorted(e["trigger_entity_id"] for e in runs) == [100, 101]
        assert {e["trigger_event"] for e in runs} == {"patient.first_login"}


class TestRedelivery:
    async def test_rolled_back_dispatch_reruns_cleanly(
        self, client, auth, drain, engine, clock
    ) -> None:
        await create_rule(client, auth, FIRST_VIDEO)
        posted = await post_event(client, auth, "appointment.booked", booked(50))
        maker = create_sessionmaker(engine)
        # A worker that crashes before committing leaves nothing behind.
        async with maker() as session:
            await dispatch_event(session, event_pk=posted["data"]["id"], now=clock.now())
            await session.rollback()
        assert await count(engine, Execution) == 0
        assert await count(engine, PatientMilestone) == 0
        await drain()
        assert await count(engine, Execution) == 1

    async def test_second_dispatch_of_same_event_adds_nothing(
        self, client, auth, drain, engine, clock
    ) -> None:
        await create_rule(client, auth, FIRST_VIDEO)
        posted = await post_event(client, auth, "appointment.booked", booked(50))
        await drain()
        maker = create_sessionmaker(engine)
        # As if a late worker whose lease expired dispatched the event again.
        async with maker() as session:
            await session.execute(update(Event).values(status="accepted"))
            await dispatch_event(session, event_pk=posted["data"]["id"], now=clock.now())
            await session.commit()
        await drain()
        assert await count(engine, Execution) == 1
        assert await count(engine, Form) == 1
        async with maker() as session:
            execution = await session.scalar(select(Execution))
        assert execution is not None and execution.status == "success"
        assert await count(engine, ExecutionAction) == 2


class TestFailures:
    async def test_smtp_failure_retried_then_partial_failure(
        self, client, auth, drain, smtp, engine
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        smtp.sink.fail_next = 10
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain(until_settled=True)

        [execution] = await executions(client, auth)
        assert execution["status"] == "partial_failure"
        email = execution["actions_executed"][2]
        assert email["action"] == "send_email"
        assert email["status"] == "failure"
        assert email["error"]
        assert execution["error_message"].startswith("send_email failed: ")
        detail = (
            await client.get(f"/v1/automations/executions/{execution['id']}", headers=auth())
        ).json()["data"]
        assert detail["actions_executed"][2]["attempts"] == 5  # retried up to the job's limit
        assert smtp.sink.messages == []
        assert await count(engine, Message, Message.status == "failed") == 1
        # The forms did not wait for, or suffer from, the email's failure.
        assert await count(engine, Form) == 2

    async def test_transient_failure_recovers(self, client, auth, drain, smtp) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        smtp.sink.fail_next = 2
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain(until_settled=True)
        [execution] = await executions(client, auth)
        assert execution["status"] == "success"
        assert len(smtp.sink.messages) == 1

    async def test_patient_without_email_is_skipped_not_failed(self, client, auth, drain) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await post_event(client, auth, "patient.onboarded", onboarded({"id": 100}))
        await drain()
        [execution] = await executions(client, auth)
        assert execution["status"] == "success"
        email = execution["actions_executed"][2]
        assert email["status"] == "skipped"
        assert email["reason"]


class TestQuietHours:
    async def test_sms_deferred_then_sent(self, client, auth, drain, clock, engine) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "SMS welcome",
                "trigger_event": "patient.onboarded",
                "actions": [
                    {"type": "send_sms", "template": "welcome_patient"},
                    {"type": "update_segment", "segment_id": 9, "action": "add"},
                ],
            },
        )
        clock.set(datetime(2025, 2, 15, 22, 30, tzinfo=UTC))
        await post_event(
            client, auth, "patient.onboarded", onboarded({**PATIENT, "timezone": "UTC"})
        )
        await drain()
        [execution] = await executions(client, auth)
        assert execution["status"] == "running"
        [sms] = execution["actions_executed"]
        assert sms["action"] == "send_sms"
        assert sms["status"] == "deferred"
        assert sms["deferred_until"] == "2025-02-16T08:00:00Z"
        assert await count(engine, Message) == 0

        clock.set(datetime(2025, 2, 16, 8, 0, tzinfo=UTC))
        await drain()
        [execution] = await executions(client, auth)
        assert execution["status"] == "success"
        assert [a["status"] for a in execution["actions_executed"]] == ["success", "success"]
        assert execution["actions_executed"][0]["sms_id"].startswith("sms_")
        assert await count(engine, Message) == 1
