"""The context rules and pathways see: an event's entities joined with stored snapshots.

An appointment, invoice or form brings its patient (by ``patient_id``) from what careflow
already knows, so a condition like ``patient.tags`` works on an ``appointment.booked`` event
that carried no patient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.entities import repository
from careflow.entities.catalog import ENTITY_TYPES, PATIENT_LINK
from careflow.entities.validation import entity_id_problem
from careflow.kit.types import EntityRef, canonical_entity_id

# Snapshots one transaction has read, by (entity type, canonical id): None where none is
# stored. Kept by a caller that joins the same entities twice (dispatch, then an action it
# runs at once), so the second join reads nothing.
SnapshotReads = dict[tuple[str, EntityRef], dict[str, Any] | None]


def patient_id_of(context: Mapping[str, Any]) -> EntityRef | None:
    """The patient a context is about: its patient, else the one its entities point at."""
    patient = context.get("patient")
    if isinstance(patient, Mapping) and entity_id_problem(patient.get("id")) is None:
        return canonical_entity_id(patient["id"])
    for entity_type, link in PATIENT_LINK.items():
        entity = context.get(entity_type)
        if isinstance(entity, Mapping) and entity_id_problem(entity.get(link)) is None:
            return canonical_entity_id(entity[link])
    message = context.get("message")
    if isinstance(message, Mapping) and entity_id_problem(message.get("patient_id")) is None:
        return canonical_entity_id(message["patient_id"])
    return None


async def _snapshot(
    session: AsyncSession,
    organization_id: int,
    entity_type: str,
    entity_id: Any,
    read: SnapshotReads | None,
) -> dict[str, Any] | None:
    key = (entity_type, canonical_entity_id(entity_id))
    if read is not None and key in read:
        return read[key]
    data = await repository.snapshot_data(session, organization_id, entity_type, key[1])
    if read is not None:
        read[key] = data
    return data


def _carried(data: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The entities ``data`` carries with an id: those ``join_snapshots`` reads first."""
    carried = []
    for entity_type in ENTITY_TYPES:
        given = data.get(entity_type)
        if isinstance(given, Mapping) and entity_id_problem(given.get("id")) is None:
            carried.append((entity_type, given))
    return carried


async def read_snapshots(
    session: AsyncSession, items: Iterable[tuple[int, Mapping[str, Any]]]
) -> dict[int, SnapshotReads]:
    """For a batch: the snapshots ``join_snapshots`` will read for each (organisation, data)
    of ``items``, by organisation, one statement per organisation. A patient linked from an
    entity is not among them: its id is known only once the entity's snapshot is read."""
    wanted: dict[int, list[tuple[str, EntityRef]]] = {}
    for organization_id, data in items:
        refs = wanted.setdefault(organization_id, [])
        refs.extend((entity_type, given["id"]) for entity_type, given in _carried(data))
    return {
        organization_id: dict(await repository.snapshots_data(session, organization_id, refs))
        for organization_id, refs in wanted.items()
        if refs
    }


async def join_snapshots(
    session: AsyncSession,
    organization_id: int,
    data: Mapping[str, Any],
    *,
    prefer_snapshots: bool = False,
    read: SnapshotReads | None = None,
) -> dict[str, Any]:
    """``data``'s entities merged with their stored snapshots, plus the linked patient.

    By default the event's own fields win over the snapshot (the rule sees the event as it
    happened); ``prefer_snapshots`` lets the snapshot win instead, for an action that runs
    later and must see the entity as it is now (a cancelled appointment, a changed email).
    ``read``, when given, is consulted before and filled after each snapshot read.
    """
    context: dict[str, Any] = {k: v for k, v in data.items() if k not in ENTITY_TYPES}
    for entity_type, given in _carried(data):
        snapshot = await _snapshot(session, organization_id, entity_type, given["id"], read) or {}
        context[entity_type] = {**given, **snapshot} if prefer_snapshots else {**snapshot, **given}
    if "patient" not in context:
        patient_id = patient_id_of(context)
        if patient_id is not None:
            stored = await _snapshot(session, organization_id, "patient", patient_id, read)
            if stored is not None:
                context["patient"] = dict(stored)
    return context


async def entity_context(
    session: AsyncSession, organization_id: int, entity_type: str, entity_id: EntityRef
) -> dict[str, Any] | None:
    """The context of a stored entity alone (the rule test endpoint); None if not stored."""
    stored = await repository.get_entity(session, organization_id, entity_type, entity_id)
    if stored is None:
        return None
    return await join_snapshots(session, organization_id, {entity_type: dict(stored.data)})
