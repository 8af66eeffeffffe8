"""Time-based triggers: reminders before appointments and follow-ups after them.

Every enabled ``appointment.before_start`` / ``appointment.after_end`` rule gets one pending
``fire_time_trigger`` job per upcoming appointment, keyed by (rule, appointment, fire time)
so it is scheduled and fired once. Booking schedules, rescheduling moves (the old fires are
dropped), cancelling drops, and a rule change recomputes that rule's fires.

Dropping is an optimisation; the guarantee is the check at fire time: the appointment row
is locked and re-read, and a fire whose appointment was cancelled or moved records a
skipped execution instead of running. So a slow worker holding an old fire can never act
on an appointment that has moved.

The arithmetic both sides agree on (when a rule fires, whether a fire is still due) is in
``automations.time_triggers``; this module places, drops and runs the fires. Its fires are
jobs, removed only through ``jobs.store``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.automations import repository as automation_rules
from careflow.automations.enabled import RuleSnapshot, enabled_rules_for
from careflow.automations.models import AutomationRule
from careflow.entities import repository as entities
from careflow.entities.context import join_snapshots
from careflow.entities.models import Entity
from careflow.executions.service import start_execution
from careflow.jobs import store as jobs
from careflow.jobs.queue import enqueue
from careflow.kit.time_triggers import (
    TIME_TRIGGERS,
    fire_time,
    is_cancelled,
    still_due,
)
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.scheduling import repository

log = structlog.get_logger("careflow.scheduling")

FIRE_KIND = "fire_time_trigger"

# A stored rule, or the dispatcher's cached snapshot of one.
ScheduledRule: TypeAlias = AutomationRule | RuleSnapshot


def appointment_ref(organization_id: int, appointment_id: EntityRef) -> str:
    return f"appointment:{organization_id}:{appointment_id}"


def _fire_key(rule_id: int, ref: str, fire_at: datetime) -> str:
    return f"fire:{rule_id}:{ref}:{fire_at.isoformat()}"


async def _time_rules(session: AsyncSession, organization_id: int) -> list[ScheduledRule]:
    """The organisation's enabled time-based rules, from the cached rule sets (one row read
    per trigger while they are unchanged): this runs for every appointment event."""
    found: list[ScheduledRule] = []
    for trigger in TIME_TRIGGERS:
        found.extend(await enabled_rules_for(session, organization_id, trigger))
    return found


async def _drop_fires(session: AsyncSession, ref: str, rule_id: int | None = None) -> None:
    """Remove the appointment's queued fires (of one rule, given ``rule_id``)."""
    await jobs.delete_queued(
        session,
        kind=FIRE_KIND,
        ref=ref,
        payload_matches=None if rule_id is None else {"rule_id": rule_id},
    )


async def _schedule(
    session: AsyncSession,
    rule: ScheduledRule,
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
    rules: Sequence[ScheduledRule] | None = None,
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


async def reschedule_rule(
    session: AsyncSession, organization_id: int, rule_id: int, now: datetime
) -> int:
    """Recompute one rule's fires for the organisation's upcoming appointments."""
    rule = await automation_rules.get(session, organization_id, rule_id)
    active = rule is not None and rule.enabled and rule.trigger_event in TIME_TRIGGERS
    scheduled = 0
    for entity in await repository.appointments(session, organization_id):
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
    return await entities.get_entity(
        session, organization_id, "appointment", appointment_id, for_update=True
    )


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
    entity = await lock_appointment(session, organization_id, appointment_id)
    rule = await automation_rules.get(session, organization_id, rule_id)
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
