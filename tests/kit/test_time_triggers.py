"""``automations.time_triggers``: the fire-time arithmetic scheduling and the runner share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from careflow.automations.enabled import RuleSnapshot
from careflow.kit.time_triggers import delivery_skip_reason, fire_time, still_due

STARTS = "2026-12-10T09:00:00Z"
ENDS = "2026-12-10T09:30:00Z"
APPOINTMENT: dict[str, Any] = {"id": "apt-1", "starts_at": STARTS, "ends_at": ENDS}


def rule(trigger: str, **config: Any) -> RuleSnapshot:
    return RuleSnapshot(
        id=1,
        organization_id=1,
        name="r",
        version=1,
        trigger_event=trigger,
        trigger_config=config,
        conditions={},
        actions=[],
    )


class TestFireTime:
    def test_before_start_counts_back_from_the_start(self) -> None:
        fire = fire_time(rule("appointment.before_start", hours_before=2), APPOINTMENT)
        assert fire == datetime(2026, 12, 10, 7, 0, tzinfo=UTC)

    def test_after_end_counts_on_from_the_end_by_default_a_day(self) -> None:
        fire = fire_time(rule("appointment.after_end"), APPOINTMENT)
        assert fire == datetime(2026, 12, 11, 9, 30, tzinfo=UTC)

    def test_an_event_trigger_or_a_missing_time_never_fires(self) -> None:
        assert fire_time(rule("appointment.booked"), APPOINTMENT) is None
        assert fire_time(rule("appointment.before_start"), {"id": "apt-1"}) is None


class TestStillDue:
    def test_due_while_the_appointment_keeps_its_time(self) -> None:
        r = rule("appointment.before_start", hours_before=2)
        fire = fire_time(r, APPOINTMENT)
        assert fire is not None
        assert still_due(r, APPOINTMENT, fire) is None

    def test_a_moved_or_cancelled_appointment_is_not(self) -> None:
        r = rule("appointment.before_start", hours_before=2)
        fire = fire_time(r, APPOINTMENT)
        assert fire is not None
        moved = {**APPOINTMENT, "starts_at": "2026-12-10T10:00:00Z"}
        assert still_due(r, moved, fire) == "appointment moved"
        cancelled = {**APPOINTMENT, "status": "cancelled"}
        assert still_due(r, cancelled, fire) == "appointment cancelled"


class TestDeliverySkipReason:
    TRIGGER = {"event": "appointment.before_start", "anchor_field": "starts_at", "anchor": STARTS}

    def test_a_time_based_action_checks_the_anchor_it_fired_for(self) -> None:
        context = {"appointment": APPOINTMENT, "trigger": self.TRIGGER}
        assert delivery_skip_reason("appointment.before_start", {}, context) is None
        moved = {"appointment": {**APPOINTMENT, "starts_at": ENDS}, "trigger": self.TRIGGER}
        assert delivery_skip_reason("appointment.before_start", {}, moved) == (
            "appointment moved"
        )

    def test_a_delayed_action_is_skipped_once_the_appointment_is_cancelled(self) -> None:
        context = {"appointment": {**APPOINTMENT, "status": "cancelled"}}
        delayed = {"delay_minutes": 30}
        assert delivery_skip_reason("appointment.booked", delayed, context) == (
            "appointment cancelled"
        )
        assert delivery_skip_reason("appointment.booked", {}, context, after_delay=True) == (
            "appointment cancelled"
        )

    def test_an_immediate_action_or_the_cancellation_rule_itself_runs(self) -> None:
        context = {"appointment": {**APPOINTMENT, "status": "cancelled"}}
        assert delivery_skip_reason("appointment.booked", {}, context) is None
        delayed = {"delay_minutes": 30}
        assert delivery_skip_reason("appointment.cancelled", delayed, context) is None
