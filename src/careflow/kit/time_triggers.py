"""Time-based triggers of rules: when a rule fires for an appointment, and whether it still may.

``appointment.before_start`` and ``appointment.after_end`` rules are never fired by an
event: ``scheduling`` places one job per (rule, appointment, fire time) and runs the rule
when it comes due. This module is the arithmetic both sides agree on, with no I/O: the
rule side (``service``) asks for a reschedule when a time-based rule changes, the
scheduling side computes fire times, and the execution runner checks a late action with
``delivery_skip_reason``. Pure functions of the rule's trigger and the appointment's
snapshot; times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from careflow.kit.clock import parse_instant

#: The job kind that recomputes one rule's fires; handled in ``scheduling.tasks``.
RESCHEDULE_RULE_KIND = "reschedule_rule"

# trigger → (appointment field, trigger_config key, direction)
TIME_TRIGGERS: dict[str, tuple[str, str, int]] = {
    "appointment.before_start": ("starts_at", "hours_before", -1),
    "appointment.after_end": ("ends_at", "hours_after", +1),
}
CANCELLED = "cancelled"


class TimeRule(Protocol):
    """What the arithmetic reads of a rule: a stored one or the dispatcher's snapshot."""

    @property
    def trigger_event(self) -> str: ...

    @property
    def trigger_config(self) -> dict[str, Any]: ...


def is_cancelled(appointment: Mapping[str, Any]) -> bool:
    return appointment.get("status") == CANCELLED


def fire_time(rule: TimeRule, appointment: Mapping[str, Any]) -> datetime | None:
    """When ``rule`` fires for ``appointment``, or None when it never does."""
    spec = TIME_TRIGGERS.get(rule.trigger_event)
    if spec is None:
        return None
    field, config_key, direction = spec
    anchor = parse_instant(appointment.get(field))
    if anchor is None:
        return None
    hours = (rule.trigger_config or {}).get(config_key, 24)
    return anchor + direction * timedelta(hours=int(hours))


def still_due(rule: TimeRule, appointment: Mapping[str, Any], fire_at: datetime) -> str | None:
    """Why a fire scheduled for ``fire_at`` must not act now, or None when it is still due."""
    if is_cancelled(appointment):
        return "appointment cancelled"
    current = fire_time(rule, appointment)
    if current is None or current != fire_at:
        return "appointment moved"
    return None


def delivery_skip_reason(
    trigger_event: str,
    action: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    after_delay: bool = False,
) -> str | None:
    """Checked when an action runs: a time-based or delayed action for an appointment that was
    cancelled, or (time-based) moved since the fire, gets nothing. ``after_delay``: an
    earlier action of the execution waited, so this one runs late too and is checked the
    same way."""
    appointment = context.get("appointment")
    if not isinstance(appointment, Mapping):
        return None
    trigger = context.get("trigger")
    time_based = isinstance(trigger, Mapping) and trigger.get("event") in TIME_TRIGGERS
    delayed = after_delay or bool(action.get("delay_minutes"))
    if not (time_based or delayed) or trigger_event == "appointment.cancelled":
        return None
    if is_cancelled(appointment):
        return "appointment cancelled"
    if time_based and isinstance(trigger, Mapping):
        anchor = parse_instant(appointment.get(str(trigger.get("anchor_field"))))
        if anchor is None or anchor != parse_instant(trigger.get("anchor")):
            return "appointment moved"
    return None
