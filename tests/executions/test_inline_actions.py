"""Actions that only write careflow's rows run in the transaction that reaches them.

The dispatch that starts an execution runs its leading undelayed ``require_form`` (and
``update_segment``) actions itself, so a consent form exists as soon as the event is
dispatched, and only the email waits for a job of its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.automations.enabled import ruleset_scope
from careflow.automations.models import AutomationRule
from careflow.db import create_sessionmaker
from careflow.events.models import Event
from careflow.executions.models import ExecutionAction
from careflow.forms.models import Form
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.queue import default_max_attempts
from careflow.kit import rulesets
from tests.fixtures.factories import PATIENT, create_rule, executions, onboarded, post_event

FORM_THEN_EMAIL: dict[str, Any] = {
    "name": "Consent, then welcome",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {"type": "require_form", "form_template_id": 10, "blocking": True},
        {"type": "send_email", "template": "welcome_patient", "delay_minutes": 30},
    ],
}


async def queued_jobs(engine: AsyncEngine) -> list[tuple[str, dict[str, Any]]]:
    async with create_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(Job.kind, Job.payload).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
        )
        return [(kind, dict(payload)) for kind, payload in rows]


async def forms_of(engine: AsyncEngine) -> list[Form]:
    async with create_sessionmaker(engine)() as session:
        return list((await session.scalars(select(Form).order_by(Form.id))).all())


async def actions_of(engine: AsyncEngine, execution_id: int) -> list[ExecutionAction]:
    async with create_sessionmaker(engine)() as session:
        rows = await session.scalars(
            select(ExecutionAction)
            .where(ExecutionAction.execution_id == execution_id)
            .order_by(ExecutionAction.action_index)
        )
        return list(rows.all())


class TestDispatchRunsTheForm:
    async def test_the_form_exists_once_the_event_is_dispatched(
        self, client, auth, drain, engine
    ) -> None:
        await create_rule(client, auth, FORM_THEN_EMAIL)
        await post_event(client, auth, "patient.onboarded", onboarded())

        assert await drain() == 1  # the dispatch alone: the email is 30 minutes away

        [execution] = await executions(client, auth)
        [form] = await forms_of(engine)
        assert (form.execution_id, form.action_index, form.status) == (
            execution["id"],
            0,
            "pending",
        )
        [step] = await actions_of(engine, execution["id"])
        assert (step.action_index, step.status, step.attempts) == (0, "success", 1)
        assert step.result == {"form_id": form.id}
        # What waits is the email, and only the email.
        [(kind, payload)] = await queued_jobs(engine)
        assert kind == "run_action"
        assert (payload["execution_id"], payload["action_index"]) == (execution["id"], 1)
        assert execution["status"] == "running"

    async def test_the_email_follows_with_its_delay(
        self, client, auth, drain, smtp, clock, engine
    ) -> None:
        await create_rule(client, auth, FORM_THEN_EMAIL)
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        assert smtp.sink.messages == []

        clock.advance(minutes=30)
        assert await drain() == 1
        [execution] = await executions(client, auth)
        assert execution["status"] == "success"
        assert len(smtp.sink.messages) == 1
        assert len(await forms_of(engine)) == 1

    async def test_a_second_rule_reuses_the_pending_form(self, client, auth, drain, engine) -> None:
        only_form = {**FORM_THEN_EMAIL, "actions": FORM_THEN_EMAIL["actions"][:1]}
        await create_rule(client, auth, {**only_form, "name": "First"})
        await create_rule(client, auth, {**only_form, "name": "Second"})
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()

        [form] = await forms_of(engine)
        results = []
        for execution in await executions(client, auth):
            assert execution["status"] == "success"
            [step] = await actions_of(engine, execution["id"])
            results.append(step.result)
        assert sorted(results, key=len) == [
            {"form_id": form.id},
            {"form_id": form.id, "reused": True},
        ]

    async def test_a_dispatch_run_again_opens_no_second_form(
        self, client, auth, drain, engine
    ) -> None:
        # The same event delivered twice is one event, one dispatch, one form.
        await create_rule(client, auth, FORM_THEN_EMAIL)
        for expect in (202, 200):
            await post_event(
                client, auth, "patient.onboarded", onboarded(), event_id="same", expect=expect
            )
        await drain()
        assert len(await forms_of(engine)) == 1
        assert len(await executions(client, auth)) == 1


class TestAFailingInlineStep:
    async def test_it_goes_to_the_queue_and_the_dispatch_still_commits(
        self, client, auth, drain, smtp, engine
    ) -> None:
        created = await create_rule(
            client,
            auth,
            {
                **FORM_THEN_EMAIL,
                "actions": [
                    FORM_THEN_EMAIL["actions"][0],
                    {"type": "send_email", "template": "welcome_patient"},
                ],
            },
        )
        # A row written around the API: a template id no database column can hold, so the
        # form's INSERT fails inside the dispatch's transaction.
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(
                update(AutomationRule)
                .where(AutomationRule.id == created["id"])
                .values(
                    actions=[
                        {"type": "require_form", "form_template_id": 2**63, "blocking": True},
                        {"type": "send_email", "template": "welcome_patient"},
                    ]
                )
            )
            await rulesets.bump(session, 1, ruleset_scope("patient.onboarded"))

        await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "id": 7}))
        await drain(until_settled=True)

        # The dispatch committed (event processed, one execution) although its inline step
        # failed; the step then ran as a job, attempt after attempt, and failed for good.
        async with create_sessionmaker(engine)() as session:
            statuses = (await session.scalars(select(Event.status))).all()
        assert statuses == ["processed"]
        [execution] = await executions(client, auth)
        assert execution["status"] == "partial_failure"
        form_step, email_step = await actions_of(engine, execution["id"])
        assert form_step.status == "failure"
        assert form_step.attempts == default_max_attempts()
        assert email_step.status == "success"
        assert await forms_of(engine) == []
        assert len(smtp.sink.messages) == 1
