"""SQL of entity snapshots (the latest of each entity a producer sent); every query is
org-scoped.

A snapshot is merged field by field: a newer event's fields win, an older event only fills
fields the snapshot lacks, and ``PUT /v1/entities`` replaces it whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, Table, bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import insert_for, insert_if_absent, one_of, pairs_of
from careflow.entities.models import Entity
from careflow.kit.types import EntityRef, canonical_entity_id

_entities: Table = Entity.__table__  # type: ignore[assignment]


def _locking(session: AsyncSession) -> bool:
    # SQLite serialises writers on its own; FOR UPDATE is PostgreSQL's row lock.
    return session.bind is not None and session.bind.dialect.name == "postgresql"


_SELECT_SNAPSHOT_DATA = select(_entities.c.data).where(
    _entities.c.organization_id == bindparam("org"),
    _entities.c.entity_type == bindparam("entity_type"),
    _entities.c.entity_id == bindparam("entity_id"),
)


async def snapshot_data(
    session: AsyncSession, organization_id: int, entity_type: str, entity_id: EntityRef
) -> dict[str, Any] | None:
    """The stored snapshot's data alone (what contexts are built from): one Core read."""
    connection = await session.connection()
    params = {
        "org": organization_id,
        "entity_type": entity_type,
        "entity_id": canonical_entity_id(entity_id),
    }
    data = (await connection.execute(_SELECT_SNAPSHOT_DATA, params)).scalar_one_or_none()
    return dict(data) if data is not None else None


async def snapshots_data(
    session: AsyncSession, organization_id: int, refs: Sequence[tuple[str, EntityRef]]
) -> dict[tuple[str, EntityRef], dict[str, Any] | None]:
    """``snapshot_data`` of many entities in one read: by (type, canonical id), None where
    none is stored."""
    keys = {(entity_type, canonical_entity_id(entity_id)) for entity_type, entity_id in refs}
    out: dict[tuple[str, EntityRef], dict[str, Any] | None] = dict.fromkeys(keys)
    if not keys:
        return out
    connection = await session.connection()
    if _locking(session):
        ordered = sorted(keys, key=str)
        params = {
            "org": organization_id,
            "types": [entity_type for entity_type, _ in ordered],
            "ids": [str(entity_id) for _, entity_id in ordered],
        }
        rows = await connection.execute(_SELECT_SNAPSHOTS_DATA, params)
    else:
        stmt = select(_entities.c.entity_type, _entities.c.entity_id, _entities.c.data).where(
            _entities.c.organization_id == organization_id,
            tuple_(_entities.c.entity_type, _entities.c.entity_id).in_(sorted(keys, key=str)),
        )
        rows = await connection.execute(stmt)
    for row in rows:
        out[(row.entity_type, row.entity_id)] = dict(row.data)
    return out


# PostgreSQL's ``snapshots_data``: the keys as two arrays, one text for any number of them.
_SELECT_SNAPSHOTS_DATA = select(
    _entities.c.entity_type, _entities.c.entity_id, _entities.c.data
).where(
    _entities.c.organization_id == bindparam("org"),
    pairs_of(
        (_entities.c.entity_type, _entities.c.entity_id), ("types", "ids"), (String(), String())
    ),
)


async def get_entity(
    session: AsyncSession,
    organization_id: int,
    entity_type: str,
    entity_id: EntityRef,
    *,
    for_update: bool = False,
) -> Entity | None:
    stmt = select(Entity).where(
        Entity.organization_id == organization_id,
        Entity.entity_type == entity_type,
        Entity.entity_id == canonical_entity_id(entity_id),
    )
    if for_update and _locking(session):
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


def _merged(
    data: Mapping[str, Any],
    updated_at: datetime,
    incoming: Mapping[str, Any],
    as_of: datetime,
    replace: bool = False,
) -> tuple[dict[str, Any], datetime]:
    """A snapshot's data and time after ``incoming`` (as of ``as_of``) is merged into it."""
    if replace:
        return dict(incoming), as_of
    if as_of >= updated_at:
        return {**data, **incoming}, as_of
    # An event older than the snapshot only fills fields the snapshot lacks.
    return {**incoming, **data}, updated_at


def _merge(stored: Entity, incoming: Mapping[str, Any], as_of: datetime, replace: bool) -> None:
    stored.data, stored.updated_at = _merged(
        stored.data, stored.updated_at, incoming, as_of, replace
    )


def _sort_key(key: tuple[str, EntityRef]) -> tuple[str, str]:
    # Entity ids are ints or strings; the database orders their stored (text) form.
    return key[0], str(key[1])


_KEY = ["organization_id", "entity_type", "entity_id"]


async def upsert_entity(
    session: AsyncSession,
    organization_id: int,
    entity_type: str,
    entity_id: EntityRef,
    data: Mapping[str, Any],
    *,
    as_of: datetime,
    replace: bool = False,
) -> Entity:
    """Store a snapshot: merged into the stored one (newest fields win) or replacing it."""
    key = canonical_entity_id(entity_id)
    stored = await get_entity(session, organization_id, entity_type, key, for_update=True)
    if stored is None:
        new_id = await insert_if_absent(
            session,
            Entity,
            {
                "organization_id": organization_id,
                "entity_type": entity_type,
                "entity_id": key,
                "data": dict(data),
                "updated_at": as_of,
            },
            _KEY,
        )
        if new_id is not None:
            return Entity(
                id=new_id,
                organization_id=organization_id,
                entity_type=entity_type,
                entity_id=key,
                data=dict(data),
                updated_at=as_of,
            )
        # A concurrent request stored it first: merge into theirs instead.
        stored = await get_entity(session, organization_id, entity_type, key, for_update=True)
        assert stored is not None  # nothing deletes snapshots
    _merge(stored, data, as_of, replace)
    await session.flush()
    return stored


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    organization_id: int
    entity_type: str
    entity_id: EntityRef
    data: Mapping[str, Any]
    as_of: datetime


async def upsert_entities(session: AsyncSession, writes: Sequence[SnapshotWrite]) -> None:
    """Store many snapshots in a handful of statements, merging in the order given.

    One SELECT reads (and on PostgreSQL locks) every stored snapshot the writes touch; the
    merges happen in memory in order, so two events of one batch about the same patient
    merge exactly as they would one after the other; then one multi-row INSERT adds the new
    ones and one executemany UPDATE the changed ones (Core on the session's connection: no
    ORM objects for rows read and written once). A snapshot another process inserted
    meanwhile is merged through the one-at-a-time path instead.
    """
    if not writes:
        return
    conn = await session.connection()
    locking = _locking(session)
    by_org: dict[int, list[SnapshotWrite]] = {}
    for write in writes:
        by_org.setdefault(write.organization_id, []).append(write)
    for organization_id, group in by_org.items():
        keys = {(w.entity_type, canonical_entity_id(w.entity_id)) for w in group}
        stmt = _SELECT_SNAPSHOTS_LOCKED if locking else _SELECT_SNAPSHOTS
        found = await conn.execute(
            stmt,
            {
                "org": organization_id,
                "types": sorted({t for t, _ in keys}),
                "ids": sorted({str(i) for _, i in keys}),
            },
        )
        stored = {
            (row.entity_type, row.entity_id): row
            for row in found
            if (row.entity_type, row.entity_id) in keys
        }
        merged: dict[tuple[str, EntityRef], tuple[dict[str, Any], datetime]] = {}
        fresh: dict[tuple[str, EntityRef], dict[str, Any]] = {}
        for write in group:
            key = (write.entity_type, canonical_entity_id(write.entity_id))
            known = stored.get(key)
            if known is not None:
                data, updated_at = merged.get(key, (known.data, known.updated_at))
                merged[key] = _merged(data, updated_at, write.data, write.as_of)
            elif key in fresh:
                row = fresh[key]
                row["data"], row["updated_at"] = _merged(
                    row["data"], row["updated_at"], write.data, write.as_of
                )
            else:
                fresh[key] = {
                    "organization_id": organization_id,
                    "entity_type": key[0],
                    "entity_id": key[1],
                    "data": dict(write.data),
                    "updated_at": write.as_of,
                }
        # Only the snapshots the merges changed are written back.
        changed = [
            {"pk": stored[key].id, "data": data, "updated_at": updated_at}
            for key, (data, updated_at) in merged.items()
            if (data, updated_at) != (stored[key].data, stored[key].updated_at)
        ]
        if changed:
            await conn.execute(_UPDATE_SNAPSHOT, changed)
        if fresh:
            rows = [fresh[key] for key in sorted(fresh, key=_sort_key)]
            inserted = await conn.execute(
                insert_for(session)(_entities)
                .on_conflict_do_nothing(index_elements=_KEY)
                .returning(_entities.c.entity_type, _entities.c.entity_id),
                rows,
            )
            done = {(t, canonical_entity_id(i)) for t, i in inserted.all()}
            for key, row in fresh.items():
                if key not in done:
                    await upsert_entity(
                        session,
                        organization_id,
                        key[0],
                        key[1],
                        row["data"],
                        as_of=row["updated_at"],
                    )


def _select_snapshots(lock: bool) -> Select[Any]:
    """``lock``: PostgreSQL's, locked, with the lists bound as arrays (``db.one_of``)."""
    c = _entities.c
    stmt = select(c.id, c.entity_type, c.entity_id, c.data, c.updated_at).where(
        c.organization_id == bindparam("org"),
        one_of(c.entity_type, "types", postgresql_array=lock),
        one_of(c.entity_id, "ids", postgresql_array=lock),
    )
    if lock:
        # In key order, as the INSERT: two batches lock shared rows in one order.
        stmt = stmt.order_by(c.entity_type, c.entity_id).with_for_update()
    return stmt


# Built once: the statements of every batch are the same but for their parameters.
_SELECT_SNAPSHOTS = _select_snapshots(lock=False)
_SELECT_SNAPSHOTS_LOCKED = _select_snapshots(lock=True)
_UPDATE_SNAPSHOT = (
    update(_entities)
    .where(_entities.c.id == bindparam("pk"))
    .values(data=bindparam("data"), updated_at=bindparam("updated_at"))
)


async def patient_phones(
    session: AsyncSession, organization_id: int
) -> list[tuple[EntityRef, str, datetime]]:
    """Every patient of the organisation with a phone: (id, phone as the host wrote it, when
    the snapshot last changed). Hosts write phones in any format, so matching one to a
    number in E.164 happens in Python, over this list."""
    phone = Entity.data["phone"].as_string()
    rows = await session.execute(
        select(Entity.entity_id, phone, Entity.updated_at).where(
            Entity.organization_id == organization_id,
            Entity.entity_type == "patient",
            phone.is_not(None),
        )
    )
    return [(entity_id, value, updated_at) for entity_id, value, updated_at in rows.tuples()]
