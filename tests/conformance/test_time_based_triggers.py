"""Time-based triggers (SPEC §4): a reminder one hour before an appointment, none for a
cancelled one, none for a rule whose fire time had passed, and an email delayed a minute.

The world posted these at its start, so the waits here overlap the other modules: the
reminder is due six seconds after the world was built, the delayed email sixty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.conformance.envelopes import data, describe, poll
from tests.conformance.server import Api, RefusingSink
from tests.conformance.world import ExecutionsFor, World

DELAYED_DEADLINE_S = 100.0  # after the delayed rule's event was posted


@dataclass
class Reminders:
    arrived: bool
    settled: bool  # the reminder's execution finished and the cancellation was processed


@pytest.fixture(scope="module")
def reminders(
    api: Api, world: World, smtp_sink: RefusingSink, executions_for: ExecutionsFor
) -> Reminders:
    arrived = bool(poll(lambda: smtp_sink.count_to("remind@example.com") >= 1, 30))
    rule_id = world.id_of("create_reminder_1h")
    cancellation = world.id_of("post_cancellation") or 0

    def settled() -> bool:
        ex = executions_for(rule_id)
        cancelled = data(api("GET", f"/v1/events/{cancellation}"))
        return (
            bool(ex)
            and all(e["status"] != "running" for e in ex)
            and cancelled.get("status") == "processed"
        )

    return Reminders(arrived, bool(poll(settled, 15)))


@dataclass
class Delayed:
    execution: dict[str, Any]  # once success ({} if not by the deadline)
    messages: list[dict[str, Any]]  # the messages of that execution


@pytest.fixture(scope="module")
def delayed(api: Api, world: World, executions_for: ExecutionsFor) -> Delayed:
    rule_id = world.id_of("create_delayed")

    def done() -> dict[str, Any] | None:
        ex = [x for x in executions_for(rule_id) if x.get("trigger_entity_id") == 107]
        return ex[0] if ex and ex[0]["status"] == "success" else None

    remaining = max(1.0, world.delayed_posted_at + DELAYED_DEADLINE_S - time.monotonic())
    execution = poll(done, remaining, interval=1.0) or {}
    messages = data(api("GET", f"/v1/messages?execution_id={execution['id']}")) if execution else []
    return Delayed(execution, list(messages))


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class TestSetup:
    def test_before_start_rule_201(self, world: World) -> None:
        r = world.responses["create_reminder_1h"]
        assert r.status_code == 201, describe(r)

    @pytest.mark.parametrize("step", ["post_reminded", "post_cancelled_booking"])
    def test_booking_202(self, world: World, step: str) -> None:
        r = world.responses[step]
        assert r.status_code == 202, describe(r)

    def test_cancellation_202(self, world: World) -> None:
        r = world.responses["post_cancellation"]
        assert r.status_code == 202, describe(r)

    def test_delayed_rule_201(self, world: World) -> None:
        r = world.responses["create_delayed"]
        assert r.status_code == 201, describe(r)

    def test_delayed_rules_event_202(self, world: World) -> None:
        r = world.responses["post_delayed"]
        assert r.status_code == 202, describe(r)


class TestReminder:
    def test_reminder_email_arrived(self, reminders: Reminders, smtp_sink: RefusingSink) -> None:
        assert reminders.arrived, smtp_sink.count_to("remind@example.com")

    def test_exactly_one_reminder(self, reminders: Reminders, smtp_sink: RefusingSink) -> None:
        # The 24 h rule, created an hour before the appointment, must not fire its past time.
        count = smtp_sink.count_to("remind@example.com")
        assert reminders.settled and count == 1, count

    def test_cancelled_appointment_gets_no_reminder(
        self, reminders: Reminders, smtp_sink: RefusingSink
    ) -> None:
        assert reminders.settled and smtp_sink.count_to("cancel@example.com") == 0


class TestDelayedEmail:
    def test_execution_running_with_nothing_listed_while_waiting(self, world: World) -> None:
        pending = world.delayed_pending
        assert pending.get("status") == "running" and pending.get("actions_executed") == [], pending

    def test_not_sent_early(self, world: World) -> None:
        assert world.delayed_sent_early == 0

    def test_execution_ends_success(
        self, delayed: Delayed, world: World, executions_for: ExecutionsFor
    ) -> None:
        assert delayed.execution, executions_for(world.id_of("create_delayed"))

    def test_email_arrived_after_the_delay(self, delayed: Delayed, smtp_sink: RefusingSink) -> None:
        # One message of the delayed rule's execution, sent a minute after the execution
        # began. (The patient's other email, the GDPR rule's welcome, follows five minutes in.)
        [message] = delayed.messages
        waited = _at(message["sent_at"]) - _at(delayed.execution["executed_at"])
        assert waited.total_seconds() >= 55, message
        assert smtp_sink.count_to("delay@example.com") >= 1
