"""Event ingestion: store the event and its entities' snapshots, then hand the work to the queue."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.db import built
from careflow.entities import repository as entities
from careflow.entities.catalog import ENTITY_TYPES
from careflow.entities.validation import entity_id_problem, validate_entity_body
from careflow.errors import ConflictError, ValidationError, not_found
from careflow.events import repository
from careflow.events.models import Event
from careflow.events.schemas import EventIn
from careflow.events.validation import validate_event
from careflow.executions.models import Execution
from careflow.forms import service as forms
from careflow.forms.models import Form
from careflow.forms.schemas import form_snapshot
from careflow.forms.service import FORM_COMPLETED
from careflow.jobs.queue import enqueue_many
from careflow.kit.context import Origin, current_origin
from careflow.kit.types import canonical_entity_id
from careflow.scheduling.service import schedule_appointment

log = structlog.get_logger("careflow.events")

DISPATCH_KIND = "dispatch_event"


class EventStatus:
    ACCEPTED = "accepted"
    PROCESSED = "processed"


@dataclass(frozen=True, slots=True)
class Ingested:
    event: Event
    created: bool  # False: the producer's event_id was already stored; this is the first one
    # Only when not created: the event sent differs from the stored one (``same_event``).
    conflict: bool = False

    def answer(self) -> Ingested:
        """This result, or the 409 ``event_id_conflict`` when it is one."""
        if self.conflict:
            raise event_id_conflict(self.event)
        return self


def event_id_conflict(stored: Event) -> ConflictError:
    """A redelivered ``event_id`` whose event differs: it names the stored event (careflow's
    id and type), not what differs, as the values may be patient data."""
    return ConflictError(
        "This event_id was already used by another event",
        code="event_id_conflict",
        details=[
            {
                "field": "event_id",
                "message": f"already names event {stored.id} ({stored.type}), whose type, "
                "occurred_at or data differ from this one; send a new event_id for a new event",
            }
        ],
    )


def _canonical(data: Any) -> str:
    # JSON's true is not 1 and key order means nothing: compare as canonical JSON text.
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def same_event(stored: Event, body: EventIn) -> bool:
    """Whether ``body`` is a redelivery of ``stored``: the same type and data, and the same
    ``occurred_at`` when the body gives one (one left out was the time it first arrived)."""
    if stored.type != body.type:
        return False
    if body.occurred_at is not None and body.occurred_at != stored.occurred_at:
        return False
    return _canonical(stored.data) == _canonical(body.data)


async def ingest_event(
    session: AsyncSession,
    organization_id: int,
    body: EventIn,
    *,
    now: datetime,
) -> Ingested:
    """Store the event and its entities and enqueue its dispatch, all in the caller's transaction.

    A known ``event_id`` returns the first event untouched: nothing is stored or enqueued
    again, so a producer's redelivery runs nothing twice; one whose event differs raises the
    409 ``event_id_conflict``. An invalid event raises the ValidationError of
    ``validate_event`` and writes nothing.
    """
    validate_event(body.type, body.data)
    [result] = await ingest_events(session, [(organization_id, body)], now=now)
    return result.answer()


async def ingest_events(
    session: AsyncSession,
    items: Sequence[tuple[int, EventIn]],
    *,
    now: datetime,
    origins: Sequence[Origin] | None = None,
) -> list[Ingested]:
    """Many events in the caller's one transaction (group commit), in order.

    The events are already validated (``validate_event``): ``POST /v1/events`` checks each
    once, before it joins a batch, where a problem can still be answered to its sender alone.
    Each event costs one INSERT; the snapshots of all of them one SELECT plus one multi-row
    INSERT and the updates; their dispatch jobs one multi-row INSERT. A known ``event_id``
    whose event differs is a result with ``conflict`` set, for its sender alone to be
    answered 409 (``Ingested.answer``): its neighbours in the batch are written.

    ``origins`` (one per item) are the requests the events came in (their ids and spans),
    carried by their dispatch jobs; by default the current one.
    """
    results = await _store_events(session, items, now)
    snapshots: list[entities.SnapshotWrite] = []
    for (organization_id, body), result in zip(items, results, strict=True):
        if result.created:
            snapshots.extend(_snapshots(organization_id, body, result.event.occurred_at))
    await entities.upsert_entities(session, snapshots)
    created = [r.event for r in results if r.created]
    # Each event's own request: a group commit writes many requests' events at once.
    sources = (
        [o for o, r in zip(origins, results, strict=True) if r.created]
        if origins is not None
        else [current_origin()] * len(created)
    )
    await enqueue_many(
        session,
        DISPATCH_KIND,
        [({"event_id": e.id}, e.organization_id, f"dispatch:{e.id}") for e in created],
        run_at=now,
        now=now,
        origins=sources,
    )
    for event, origin in zip(created, sources, strict=True):
        log.info(
            "event_ingested",
            event_pk=event.id,
            type=event.type,
            org_id=event.organization_id,
            request_id=origin.request_id,
        )
    return results


async def _store_events(
    session: AsyncSession, items: Sequence[tuple[int, EventIn]], now: datetime
) -> list[Ingested]:
    # Insert first and look only on a conflict: new events (the common case) cost one
    # statement together, and a redelivery finds the first one just the same.
    rows: list[dict[str, Any]] = [
        {
            "organization_id": organization_id,
            "event_id": body.event_id,
            "type": body.type,
            "occurred_at": body.occurred_at or now,
            "data": body.data,
            "status": EventStatus.ACCEPTED,
            "episode_id": None,
            "created_at": now,
            "processed_at": None,
        }
        for organization_id, body in items
    ]
    ids = await repository.insert_events(session, rows)
    results = []
    for (_, body), row, new_id in zip(items, rows, ids, strict=True):
        if new_id is not None:
            # Built from what was written rather than read back.
            results.append(Ingested(built(Event, {"id": new_id, **row}), created=True))
            continue
        # A redelivery, or a race with a concurrent one: the stored event is the answer.
        existing = await repository.get_event_by_producer_id(
            session, row["organization_id"], row["event_id"]
        )
        if existing is None:  # pragma: no cover - the conflicting row must be visible now
            raise RuntimeError("event insert conflicted but no event is stored")
        results.append(Ingested(existing, created=False, conflict=not same_event(existing, body)))
    return results


def _snapshots(
    organization_id: int, body: EventIn, occurred_at: datetime
) -> list[entities.SnapshotWrite]:
    out = []
    for entity_type in ENTITY_TYPES:
        entity = body.data.get(entity_type)
        if isinstance(entity, dict) and entity_id_problem(entity.get("id")) is None:
            if body.type == "appointment.cancelled" and entity_type == "appointment":
                # The snapshot must say so: reminders re-read it when they come due.
                entity = {**entity, "status": entity.get("status") or "cancelled"}
            out.append(
                entities.SnapshotWrite(
                    organization_id, entity_type, entity["id"], entity, occurred_at
                )
            )
    return out


async def get_event(
    session: AsyncSession, principal: Principal, pk: int
) -> tuple[Event, list[Execution]]:
    event = await repository.get_event(session, principal.org_id, pk)
    if event is None:
        raise not_found("event")
    executions = await repository.executions_of_event(session, principal.org_id, event.id)
    return event, executions


async def put_entity(
    session: AsyncSession,
    principal: Principal,
    entity_type: str,
    entity_id: str,
    body: Any,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Replace the stored snapshot of one entity (backfills); no event, no rule runs."""
    problem = entity_id_problem(entity_id)
    if problem:
        raise ValidationError(details=[{"field": "id", "message": problem}])
    path_id = canonical_entity_id(entity_id)
    data = validate_entity_body(entity_type, path_id, body)
    stored = await entities.upsert_entity(
        session, principal.org_id, entity_type, path_id, data, as_of=now, replace=True
    )
    if entity_type == "appointment":
        await schedule_appointment(session, principal.org_id, {**stored.data, "id": path_id}, now)
    log.info(
        "entity_stored", entity_type=entity_type, entity_id=str(path_id), org_id=principal.org_id
    )
    return dict(stored.data)


async def complete_form(
    session: AsyncSession, principal: Principal, form_id: int, now: datetime
) -> Form:
    """Mark a pending form completed (``forms.service``) and emit ``form.completed``.

    The event row and its ``dispatch_event`` job are written in the caller's transaction,
    so a completion that does not commit triggers nothing.
    """
    form = await forms.complete_form(session, principal, form_id, now)
    # Through the one ingestion path, so the form's snapshot is stored like any producer's
    # and the event is dispatched to rules exactly as a posted one would be.
    await ingest_event(
        session,
        principal.org_id,
        EventIn(
            # One completion per form, so the form id alone names this occurrence.
            event_id=f"form-completed:{form.id}",
            type=FORM_COMPLETED,
            data={"form": form_snapshot(form), "patient": {"id": form.patient_id}},
        ),
        now=now,
    )
    return form


async def events_by_pk(
    session: AsyncSession, principal: Principal, pks: Sequence[int]
) -> list[Event]:
    """The caller's organisation's events among ``pks`` (others' are left out), oldest first."""
    return await repository.events_in_org(session, principal.org_id, pks)
