"""Dispatch a stored event: derived triggers, the rules of each trigger, then its episode.

Runs as one job in one transaction. Everything it writes is keyed by a unique index
(milestone per patient, execution per rule and occurrence), so a redelivered or rerun
dispatch finds what an earlier one committed instead of doing it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.automations.enabled import enabled_rules_for
from careflow.entities.context import SnapshotReads, join_snapshots, patient_id_of, read_snapshots
from careflow.entities.validation import entity_id_problem
from careflow.events import repository
from careflow.events.catalog import FIRST_BOOKED, FIRST_LOGIN, MILESTONES, trigger_entity_type
from careflow.events.models import Event
from careflow.events.service import EventStatus
from careflow.executions.models import Execution
from careflow.executions.runner import Runtime, run_started
from careflow.executions.service import start_execution
from careflow.forms import repository as forms
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.pathways import episodes
from careflow.scheduling.service import schedule_stored_appointment

log = structlog.get_logger("careflow.events.dispatch")

# Time-based triggers are scheduled from appointment times, never fired by an event.
TIME_BASED_TRIGGERS = frozenset({"appointment.before_start", "appointment.after_end"})

# The event type whose first occurrence for a patient fires the derived trigger.
DERIVED_FROM = {"patient.logged_in": FIRST_LOGIN, "appointment.booked": FIRST_BOOKED}


def occurrence_key(event: Event, trigger: str) -> str:
    return f"event:{event.id}:{trigger}"


async def _triggers(
    session: AsyncSession, event: Event, patient_id: EntityRef | None, now: datetime
) -> list[str]:
    """The event's own type plus the derived triggers it fires, each milestone once per patient."""
    out: list[str] = []
    candidates = [event.type]
    if event.type in DERIVED_FROM:
        candidates.append(DERIVED_FROM[event.type])
    for trigger in candidates:
        if trigger in TIME_BASED_TRIGGERS:
            continue
        if trigger in MILESTONES:
            if patient_id is None:
                log.info("milestone_without_patient", event_pk=event.id, trigger=trigger)
                continue
            first = await repository.claim_milestone(
                session,
                event.organization_id,
                patient_id,
                trigger,
                event_pk=event.id,
                now=now,
            )
            if not first:
                continue
        out.append(trigger)
    return out


def _trigger_entity(
    trigger: str, context: Mapping[str, Any], patient_id: EntityRef | None
) -> tuple[str, EntityRef] | None:
    entity_type = trigger_entity_type(trigger) or "patient"
    if entity_type == "patient":
        return ("patient", patient_id) if patient_id is not None else None
    entity = context.get(entity_type)
    if isinstance(entity, Mapping) and entity_id_problem(entity.get("id")) is None:
        return entity_type, canonical_entity_id(entity["id"])
    return None


async def _run_rules(
    session: AsyncSession,
    event: Event,
    trigger: str,
    context: dict[str, Any],
    patient_id: EntityRef | None,
    now: datetime,
    run_first: Callable[[Execution], Awaitable[bool]] | None,
) -> None:
    rules = await enabled_rules_for(session, event.organization_id, trigger)
    if not rules:
        return
    target = _trigger_entity(trigger, context, patient_id)
    if target is None:
        log.warning("trigger_without_entity", event_pk=event.id, trigger=trigger)
        return
    entity_type, entity_id = target
    for rule in rules:
        await start_execution(
            session,
            rule=rule,
            trigger_event=trigger,
            occurrence_key=occurrence_key(event, trigger),
            trigger_entity_type=entity_type,
            trigger_entity_id=entity_id,
            patient_id=patient_id,
            context=context,
            event_pk=event.id,
            now=now,
            run_first=run_first,
            # The event is locked and not yet processed: none of its executions exists.
            hold=True,
        )


async def _route_to_episode(
    session: AsyncSession,
    event: Event,
    context: dict[str, Any],
    now: datetime,
    routes: episodes.RouteReads | None,
) -> None:
    episode = await episodes.route_event(
        session,
        organization_id=event.organization_id,
        event_pk=event.id,
        event_id=event.event_id,
        event_type=event.type,
        occurred_at=event.occurred_at,
        context=context,
        now=now,
        event_locked=True,
        reads=routes,
    )
    if episode is not None:
        event.episode_id = episode.id


async def _schedule_reminders(session: AsyncSession, event: Event, now: datetime) -> None:
    """Booking schedules an appointment's time-based fires, rescheduling moves, cancelling drops.

    Computed from the stored snapshot (the latest the producer sent), not the event's copy.
    """
    appointment = event.data.get("appointment")
    if not event.type.startswith("appointment.") or not isinstance(appointment, Mapping):
        return
    if entity_id_problem(appointment.get("id")) is not None:
        return
    await schedule_stored_appointment(
        session, event.organization_id, canonical_entity_id(appointment["id"]), now
    )


@dataclass(slots=True)
class DispatchReads:
    """What a batch of dispatches read before any of them ran: the events (locked) and the
    snapshots of the entities they carry, one statement each for the whole batch."""

    events: dict[int, Event] = field(default_factory=dict)
    snapshots: dict[int, SnapshotReads] = field(default_factory=dict)  # by organisation
    contexts: dict[int, dict[str, Any]] = field(default_factory=dict)  # by event pk
    routes: episodes.RouteReads | None = None

    def take(self, event_pk: int) -> Event | None:
        """The event, once: a second dispatch of it in the batch reads it for itself."""
        return self.events.pop(event_pk, None)


async def _form_patients(
    session: AsyncSession, events: Sequence[Event], contexts: Mapping[int, Mapping[str, Any]]
) -> set[tuple[int, EntityRef]]:
    """The patients of ``events`` whose triggers have a rule that may open a form."""
    opens: dict[tuple[int, str], bool] = {}  # (organisation, trigger): once a batch, not an event

    async def may_open(organization_id: int, trigger: str) -> bool:
        if (organization_id, trigger) not in opens:
            rules = await enabled_rules_for(session, organization_id, trigger)
            opens[organization_id, trigger] = any(
                action.get("type") == "require_form" for rule in rules for action in rule.actions
            )
        return opens[organization_id, trigger]

    out: set[tuple[int, EntityRef]] = set()
    for event in events:
        patient_id = patient_id_of(contexts[event.id])
        if patient_id is None or (event.organization_id, patient_id) in out:
            continue
        for trigger in (event.type, DERIVED_FROM.get(event.type)):
            if trigger is None or trigger in TIME_BASED_TRIGGERS:
                continue
            if await may_open(event.organization_id, trigger):
                out.add((event.organization_id, patient_id))
                break
    return out


async def read_dispatches(
    session: AsyncSession, payloads: Sequence[Mapping[str, Any]]
) -> DispatchReads:
    """The reads of ``payloads``' dispatches (``dispatch_event`` jobs): their events, the
    snapshots those carry, each event's context, and what routing them reads."""
    pks: set[int] = set()
    for payload in payloads:
        try:
            pks.add(int(payload["event_id"]))
        except (KeyError, TypeError, ValueError):
            continue  # the handler refuses it
    events = await repository.get_events_by_pk(session, sorted(pks))
    reads = DispatchReads(events={event.id: event for event in events})
    pending = [event for event in events if event.status != EventStatus.PROCESSED]
    reads.snapshots = await read_snapshots(
        session, ((event.organization_id, event.data or {}) for event in pending)
    )
    for event in pending:
        read = reads.snapshots.setdefault(event.organization_id, {})
        reads.contexts[event.id] = await join_snapshots(
            session, event.organization_id, event.data, read=read
        )
    if pending and db.draws_ids(session):
        # What the batch inserts takes ids drawn ahead: a block of each, in one statement.
        db.want_ids(session, ("executions", "forms", "episodes"), len(pending))
        await forms.read_pending(session, await _form_patients(session, pending, reads.contexts))
    reads.routes = await episodes.read_routes(
        session,
        [(e.organization_id, e.id, e.type, reads.contexts[e.id]) for e in pending],
    )
    return reads


async def dispatch_event(
    session: AsyncSession,
    *,
    event_pk: int,
    now: datetime,
    runtime: Runtime | None = None,
    reads: DispatchReads | None = None,
) -> None:
    """Dispatch one stored event. With ``runtime`` (the worker's), an execution's leading
    database-only actions run in this transaction rather than as jobs of their own.
    ``reads``, when the dispatch runs in a batch, holds what the batch read ahead for it."""
    event = reads.take(event_pk) if reads is not None else None
    if event is None:
        # Not prefetched (a second dispatch of one event in a batch): read it now, with what
        # the batch has written so far.
        event = await repository.get_event_by_pk(session, event_pk)
    if event is None:
        log.warning("dispatch_event_missing", event_pk=event_pk)
        return
    if event.status == EventStatus.PROCESSED:
        return
    # Snapshots do not change during a dispatch (only ingestion writes them), so those the
    # batch read for all its events serve each of them.
    read: SnapshotReads = (
        reads.snapshots.setdefault(event.organization_id, {}) if reads is not None else {}
    )
    context = reads.contexts.pop(event.id, None) if reads is not None else None
    if context is None:
        context = await join_snapshots(session, event.organization_id, event.data, read=read)
    patient_id = patient_id_of(context)
    run_first = None
    if runtime is not None:

        async def run_first(execution: Execution) -> bool:
            return await run_started(session, execution, runtime, read=read)

    await _schedule_reminders(session, event, now)
    for trigger in await _triggers(session, event, patient_id, now):
        await _run_rules(session, event, trigger, context, patient_id, now, run_first)
    await _route_to_episode(
        session, event, context, now, reads.routes if reads is not None else None
    )
    event.status = EventStatus.PROCESSED
    event.processed_at = now
    await repository.mark_processed(session, event)
    log.info("event_dispatched", event_pk=event.id, type=event.type, org_id=event.organization_id)
