"""SQL of events and patient milestones; every query is org-scoped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.db import built, insert_for, insert_if_absent, one_of
from careflow.events.models import Event, PatientMilestone
from careflow.executions.models import Execution
from careflow.kit.types import EntityRef, canonical_entity_id

_events: Table = Event.__table__  # type: ignore[assignment]


def _locking(session: AsyncSession) -> bool:
    # SQLite serialises writers on its own; FOR UPDATE is PostgreSQL's row lock.
    return session.bind is not None and session.bind.dialect.name == "postgresql"


async def get_event(session: AsyncSession, organization_id: int, pk: int) -> Event | None:
    return await session.scalar(
        select(Event).where(Event.organization_id == organization_id, Event.id == pk)
    )


_SELECT_EVENT = select(_events).where(_events.c.id == bindparam("pk"))
_SELECT_EVENT_LOCKED = _SELECT_EVENT.with_for_update()
_SELECT_EVENTS = (
    select(_events).where(_events.c.id.in_(bindparam("pks", expanding=True))).order_by(_events.c.id)
)
# PostgreSQL's: the ids as one array, so the text is the same for any batch (db.one_of).
_SELECT_EVENTS_LOCKED = (
    select(_events)
    .where(one_of(_events.c.id, "pks", postgresql_array=True))
    .order_by(_events.c.id)
    .with_for_update()
)
_MARK_PROCESSED = (
    update(_events)
    .where(_events.c.id == bindparam("pk"))
    .values(
        status=bindparam("status"),
        processed_at=bindparam("processed_at"),
        episode_id=bindparam("episode_id"),
    )
)


async def get_event_by_pk(session: AsyncSession, pk: int) -> Event | None:
    """For the worker, which holds the event's id from a job it was handed: locked on
    PostgreSQL. Built from the row, not added to the session; ``mark_processed`` writes it.
    """
    stmt = _SELECT_EVENT_LOCKED if _locking(session) else _SELECT_EVENT
    connection = await session.connection()
    row = (await connection.execute(stmt, {"pk": pk})).first()
    return built(Event, row._mapping) if row is not None else None


async def get_events_by_pk(session: AsyncSession, pks: Sequence[int]) -> list[Event]:
    """``get_event_by_pk`` of many events in one read, locked in id order on PostgreSQL (two
    batches that share events then take their locks in one order)."""
    if not pks:
        return []
    stmt = _SELECT_EVENTS_LOCKED if _locking(session) else _SELECT_EVENTS
    connection = await session.connection()
    rows = await connection.execute(stmt, {"pks": sorted(set(pks))})
    return [built(Event, row._mapping) for row in rows]


async def mark_processed(session: AsyncSession, event: Event) -> None:
    """Write the dispatch's outcome on the event: its status, when, and its episode (held
    by the session's write buffer, if it has one)."""
    values = {
        "pk": event.id,
        "status": event.status,
        "processed_at": event.processed_at,
        "episode_id": event.episode_id,
    }
    await db.write(
        session, "events.processed", _MARK_PROCESSED, values, row=("events", event.id)
    )


async def get_event_by_producer_id(
    session: AsyncSession, organization_id: int, event_id: str
) -> Event | None:
    return await session.scalar(
        select(Event).where(Event.organization_id == organization_id, Event.event_id == event_id)
    )


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[int | None]:
    """Insert events in one statement; each row's new id, or None where the producer's
    ``event_id`` is already stored in the organisation (or earlier in ``rows``).

    The rows go out as one multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (the
    statement compiled once and cached, whatever the number of rows). Returned rows are
    matched back by (organisation, event_id); rows without an event_id never conflict, and
    take their organisation's new ids in the order they were inserted.
    """
    if not rows:
        return []
    stmt = (
        insert_for(session)(_events)
        .on_conflict_do_nothing(index_elements=["organization_id", "event_id"])
        .returning(_events.c.id, _events.c.organization_id, _events.c.event_id)
    )
    # In key order: two transactions inserting the same event_ids (a producer's redelivery
    # racing its first delivery) then wait on each other in one order, never in a cycle.
    order = sorted(
        range(len(rows)),
        key=lambda i: (rows[i]["organization_id"], rows[i]["event_id"] or ""),
    )
    conn = await session.connection()  # Core on the connection: no ORM layer per batch
    returned = (await conn.execute(stmt, [rows[i] for i in order])).all()
    by_key = {(r.organization_id, r.event_id): r.id for r in returned if r.event_id is not None}
    # Rows without an event_id take their ids in the order they were inserted (``order``,
    # not the order given), and only from their own organisation's new rows: a batch holds
    # several organisations' requests, and each must be answered with its own event.
    anonymous: dict[int, list[int]] = {}
    for r in returned:
        if r.event_id is None:
            anonymous.setdefault(r.organization_id, []).append(r.id)
    unclaimed = {org: iter(sorted(new_ids)) for org, new_ids in anonymous.items()}
    ids: list[int | None] = [None] * len(rows)
    for i in order:
        row = rows[i]
        if row["event_id"] is None:
            ids[i] = next(unclaimed[row["organization_id"]])
        else:
            # The first row of a key gets its id; a repeat of it in the same batch gets None.
            ids[i] = by_key.pop((row["organization_id"], row["event_id"]), None)
    return ids


async def claim_milestone(
    session: AsyncSession,
    organization_id: int,
    patient_id: EntityRef,
    name: str,
    *,
    event_pk: int,
    now: datetime,
) -> bool:
    """True when this event is the patient's first ``name`` (or already claimed it before)."""
    key = canonical_entity_id(patient_id)
    new_id = await insert_if_absent(
        session,
        PatientMilestone,
        {
            "organization_id": organization_id,
            "patient_id": key,
            "name": name,
            "event_pk": event_pk,
            "created_at": now,
        },
        ["organization_id", "patient_id", "name"],
    )
    if new_id is not None:
        return True
    existing = await session.scalar(
        select(PatientMilestone).where(
            PatientMilestone.organization_id == organization_id,
            PatientMilestone.patient_id == key,
            PatientMilestone.name == name,
        )
    )
    # A redelivered dispatch of the event that claimed it still fires it (its executions
    # are deduplicated by their own unique key).
    return existing is not None and existing.event_pk == event_pk


async def executions_of_event(
    session: AsyncSession, organization_id: int, event_pk: int
) -> list[Execution]:
    rows = await session.scalars(
        select(Execution)
        .where(Execution.organization_id == organization_id, Execution.event_pk == event_pk)
        .order_by(Execution.id)
    )
    return list(rows)


async def events_in_org(
    session: AsyncSession, organization_id: int, pks: Sequence[int]
) -> list[Event]:
    """An organisation's events among ``pks``, oldest first (unlocked: for reading)."""
    if not pks:
        return []
    rows = await session.scalars(
        select(Event)
        .where(Event.organization_id == organization_id, Event.id.in_(sorted(set(pks))))
        .order_by(Event.occurred_at, Event.id)
    )
    return list(rows)
