"""Time-based triggers: reminders before appointments and follow-ups after them.

Every enabled ``appointment.before_start`` / ``appointment.after_end`` rule gets one pending
``fire_time_trigger`` job per upcoming appointment, keyed by (rule, appointment, fire time)
so it is scheduled and fired once. Booking schedules, rescheduling moves (the old fires are
dropped), cancelling drops, and a rule change recomputes that rule's fires.

Dropping is an optimisation; the guarantee is the check at fire time: the appointment row
is locked and re-read, and a fire whose appointment was cancelled or moved records a
skipped execution instead of running. So a slow worker holding an old fire can never act
on an appointment that has moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.automations.models import AutomationRule
from careflow.entities.models import Entity
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.queue import enqueue
from careflow.kit.clock import parse_instant
from careflow.kit.types import EntityRef, canonical_entity_id

if TYPE_CHECKING:
    from careflow.automations.service import RuleSnapshot

    # A stored rule, or the dispatcher's cached snapshot of one.
    TimeRule: TypeAlias = AutomationRule | RuleSnapshot

log = structlog.get_logger("careflow.scheduling")

FIRE_KIND = "fire_time_trigger"
RESCHEDULE_RULE_KIND = "reschedule_rule"

# trigger → (appointment field, trigger_config key, direction)
TIME_TRIGGERS: dict[str, tuple[str, str, int]] = {
    "appointment.before_start": ("starts_at", "hours_before", -1),
    "appointment.after_end": ("ends_at", "hours_after", +1),
}
CANCELLED = "cancelled"


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


def appointment_ref(organization_id: int, appointment_id: EntityRef) -> str:
    return f"appointment:{organization_id}:{appointment_id}"


def _fire_key(rule_id: int, ref: str, fire_at: datetime) -> str:
    return f"fire:{rule_id}:{ref}:{fire_at.isoformat()}"


async def _time_rules(session: AsyncSession, organization_id: int) -> list[TimeRule]:
    """The organisation's enabled time-based rules, from the cached rule sets (one row read
    per trigger while they are unchanged): this runs for every appointment event."""
    # Imported here: automations.service imports this module to reschedule on rule changes.
    from careflow.automations.service import enabled_rules_for

    rules: list[TimeRule] = []
    for trigger in TIME_TRIGGERS:
        rules.extend(await enabled_rules_for(session, organization_id, trigger))
    return rules


async def _drop_fires(session: AsyncSession, ref: str, rule_id: int | None = None) -> None:
    stmt = delete(Job).where(Job.ref == ref, Job.kind == FIRE_KIND, Job.status == JobStatus.QUEUED)
    if rule_id is None:
        await session.execute(stmt)
        return
    # A handful of fires per appointment: filter the rule in Python, portable across engines.
    jobs = await session.scalars(
        select(Job).where(Job.ref == ref, Job.kind == FIRE_KIND, Job.status == JobStatus.QUEUED)
    )
    ids = [j.id for j in jobs if j.payload.get("rule_id") == rule_id]
    if ids:
        await session.execute(delete(Job).where(Job.id.in_(ids)))


async def _schedule(
    session: AsyncSession,
    rule: TimeRule,
    appointment: Mapping[str, Any],
    ref: str,
    now: datetime,
) -> None:
    fire_at = fire_time(rule, appointment)
    if fire_at is None or fire_at <= now:
        return  # a fire time already in the past is not fired
    await enqueue(
        session,
        FIRE_KIND,
        {
            "organization_id": rule.organization_id,
            "rule_id": rule.id,
            "appointment_id": appointment["id"],
            "fire_at": fire_at.isoformat(),
        },
        run_at=fire_at,
        now=now,
        organization_id=rule.organization_id,
        dedupe_key=_fire_key(rule.id, ref, fire_at),
        ref=ref,
    )


async def schedule_appointment(
    session: AsyncSession,
    organization_id: int,
    appointment: Mapping[str, Any],
    now: datetime,
    *,
    rules: Sequence[TimeRule] | None = None,
) -> None:
    """(Re)compute every time-based fire of one appointment from its current snapshot."""
    if rules is None:
        rules = await _time_rules(session, organization_id)
    if not rules:
        # No enabled time-based rule: nothing to place, and a disabled or deleted rule's
        # reschedule_rule job drops its own pending fires.
        return
    appointment_id = canonical_entity_id(appointment["id"])
    ref = appointment_ref(organization_id, appointment_id)
    await _drop_fires(session, ref)
    if is_cancelled(appointment):
        return
    for rule in rules:
        await _schedule(session, rule, appointment, ref, now)


async def schedule_stored_appointment(
    session: AsyncSession, organization_id: int, appointment_id: EntityRef, now: datetime
) -> None:
    """The same from the stored snapshot, read only when the organisation has time rules."""
    rules = await _time_rules(session, organization_id)
    if not rules:
        return
    # Locked like a fire locks it, so this and a fire of the same appointment take turns.
    entity = await lock_appointment(session, organization_id, appointment_id)
    if entity is not None:
        await schedule_appointment(
            session, organization_id, {**entity.data, "id": entity.entity_id}, now, rules=rules
        )


async def request_rule_reschedule(
    session: AsyncSession, rule: AutomationRule, now: datetime
) -> None:
    """After a time-based rule is created, changed, enabled, disabled or deleted."""
    await enqueue(
        session,
        RESCHEDULE_RULE_KIND,
        {"rule_id": rule.id, "organization_id": rule.organization_id},
        run_at=now,
        now=now,
        organization_id=rule.organization_id,
        dedupe_key=f"reschedule:{rule.id}:{rule.version}:{now.isoformat()}",
    )


async def reschedule_rule(
    session: AsyncSession, organization_id: int, rule_id: int, now: datetime
) -> int:
    """Recompute one rule's fires for the organisation's upcoming appointments."""
    rule = await session.scalar(
        select(AutomationRule).where(
            AutomationRule.organization_id == organization_id, AutomationRule.id == rule_id
        )
    )
    active = rule is not None and rule.enabled and rule.trigger_event in TIME_TRIGGERS
    appointments = await session.scalars(
        select(Entity).where(
            Entity.organization_id == organization_id, Entity.entity_type == "appointment"
        )
    )
    scheduled = 0
    for entity in appointments:
        ref = appointment_ref(organization_id, entity.entity_id)
        await _drop_fires(session, ref, rule_id)
        if active and rule is not None and not is_cancelled(entity.data):
            await _schedule(session, rule, {**entity.data, "id": entity.entity_id}, ref, now)
            scheduled += 1
    return scheduled


async def lock_appointment(
    session: AsyncSession, organization_id: int, appointment_id: EntityRef
) -> Entity | None:
    """The appointment row, locked on PostgreSQL so a concurrent reschedule waits its turn."""
    stmt = select(Entity).where(
        Entity.organization_id == organization_id,
        Entity.entity_type == "appointment",
        Entity.entity_id == appointment_id,
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


def still_due(
    rule: AutomationRule, appointment: Mapping[str, Any], fire_at: datetime
) -> str | None:
    """Why a fire scheduled for ``fire_at`` must not act now, or None when it is still due."""
    if is_cancelled(appointment):
        return "appointment cancelled"
    current = fire_time(rule, appointment)
    if current is None or current != fire_at:
        return "appointment moved"
    return None


def occurrence_key(appointment_id: EntityRef, fire_at: datetime) -> str:
    return f"fire:{appointment_id}:{fire_at.isoformat()}"


async def fire(
    session: AsyncSession,
    *,
    organization_id: int,
    rule_id: int,
    appointment_id: EntityRef,
    fire_at: datetime,
    now: datetime,
) -> None:
    """Run a rule's time-based trigger for one appointment, if it is still due."""
    from careflow.entities.context import join_snapshots
    from careflow.executions.service import start_execution

    entity = await lock_appointment(session, organization_id, appointment_id)
    rule = await session.scalar(
        select(AutomationRule).where(
            AutomationRule.organization_id == organization_id, AutomationRule.id == rule_id
        )
    )
    if (
        entity is None
        or rule is None
        or not rule.enabled
        or rule.trigger_event not in TIME_TRIGGERS
    ):
        # The rule's own change already rescheduled its fires; this one is simply stale.
        log.info("fire_dropped", rule_id=rule_id, org_id=organization_id)
        return
    appointment = {**entity.data, "id": entity.entity_id}
    context = await join_snapshots(
        session, organization_id, {"appointment": appointment}, prefer_snapshots=True
    )
    field = TIME_TRIGGERS[rule.trigger_event][0]
    # What the delivery check compares against when a delayed action of this run comes due.
    context["trigger"] = {
        "event": rule.trigger_event,
        "fire_at": fire_at.isoformat(),
        "anchor_field": field,
        "anchor": appointment.get(field),
    }
    patient = context.get("patient")
    patient_id = patient.get("id") if isinstance(patient, Mapping) else None
    if patient_id is None:
        patient_id = appointment.get("patient_id")
    await start_execution(
        session,
        rule=rule,
        trigger_event=rule.trigger_event,
        occurrence_key=occurrence_key(entity.entity_id, fire_at),
        trigger_entity_type="appointment",
        trigger_entity_id=entity.entity_id,
        patient_id=canonical_entity_id(patient_id) if patient_id is not None else None,
        context=context,
        event_pk=None,
        now=now,
        skip_reason=still_due(rule, appointment, fire_at),
    )


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
