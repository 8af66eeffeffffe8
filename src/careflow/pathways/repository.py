"""SQL of pathway rules, configs and episodes; every query starts from the organisation."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.db import built
from careflow.kit import listcounts
from careflow.kit.types import EntityRef
from careflow.pathways.models import Episode, EpisodeEvent, PathwayConfig, PathwayRule


def is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@asynccontextmanager
async def unique_write(session: AsyncSession, *, savepoint: bool = True) -> AsyncIterator[None]:
    """Write the block's changes and flush them; a unique index refusing them raises
    ``IntegrityError`` out of the block.

    On PostgreSQL the block runs in a SAVEPOINT, so the transaction stays usable after a
    refusal. On SQLite it does not: pysqlite's legacy transaction handling makes RELEASE of
    an outermost SAVEPOINT commit, which would commit half a request. There a refusal
    leaves the session to be rolled back by its boundary (request or job), which is what
    happens to a request answering 409 anyway. ``savepoint=False`` asks for that on
    PostgreSQL too, for a caller that does not go on after a refusal.
    """
    if is_sqlite(session) or not savepoint:
        yield
        await session.flush()
        return
    async with session.begin_nested():
        yield
        await session.flush()


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleFilters:
    trigger_type: str | None = None
    enabled: bool | None = None
    creation_mode: str | None = None
    suggested_priority: str | None = None


def _rules(organization_id: int) -> Select[PathwayRule]:
    return select(PathwayRule).where(PathwayRule.organization_id == organization_id)


async def list_rules(
    session: AsyncSession, organization_id: int, filters: RuleFilters, *, limit: int, offset: int
) -> tuple[Sequence[PathwayRule], int]:
    query = _rules(organization_id)
    if filters.trigger_type is not None:
        query = query.where(PathwayRule.trigger_type == filters.trigger_type)
    if filters.enabled is not None:
        query = query.where(PathwayRule.enabled.is_(filters.enabled))
    if filters.creation_mode is not None:
        query = query.where(PathwayRule.creation_mode == filters.creation_mode)
    if filters.suggested_priority is not None:
        query = query.where(PathwayRule.suggested_priority == filters.suggested_priority)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(PathwayRule.trigger_type, PathwayRule.priority).limit(limit).offset(offset)
    )
    return rows.all(), total or 0


async def get_rule(session: AsyncSession, organization_id: int, rule_id: str) -> PathwayRule | None:
    return await session.scalar(_rules(organization_id).where(PathwayRule.id == rule_id))


async def rules_for_trigger(
    session: AsyncSession, organization_id: int, trigger_type: str
) -> Sequence[PathwayRule]:
    """Every rule of the trigger type, enabled or not, in evaluation order."""
    rows = await session.scalars(
        _rules(organization_id)
        .where(PathwayRule.trigger_type == trigger_type)
        .order_by(PathwayRule.priority)
    )
    return rows.all()


# --- configs ------------------------------------------------------------------------------


async def get_config(
    session: AsyncSession, organization_id: int, trigger_type: str
) -> PathwayConfig | None:
    return await session.scalar(
        select(PathwayConfig).where(
            PathwayConfig.organization_id == organization_id,
            PathwayConfig.trigger_type == trigger_type,
        )
    )


async def list_configs(session: AsyncSession, organization_id: int) -> Sequence[PathwayConfig]:
    rows = await session.scalars(
        select(PathwayConfig).where(PathwayConfig.organization_id == organization_id)
    )
    return rows.all()


# --- episodes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpisodeFilters:
    patient_id: str | None = None
    journey_type: str | None = None
    status: str | None = None
    inbox_visibility: str | None = None
    suggested_assignment: str | None = None
    suggested_priority: str | None = None


def _episodes(organization_id: int) -> Select[Episode]:
    return select(Episode).where(Episode.organization_id == organization_id)


async def list_episodes(
    session: AsyncSession,
    organization_id: int,
    filters: EpisodeFilters,
    *,
    limit: int,
    offset: int,
) -> tuple[Sequence[Episode], int]:
    """One page, newest first (``list_queries``), and how many episodes match in all
    (``listcounts.total``: kept counts on PostgreSQL, but for a patient's few episodes)."""
    count, page = list_queries(organization_id, filters, limit=limit, offset=offset)

    async def count_where(extra: Sequence[ColumnElement[bool]]) -> int:
        return int(await session.scalar(count.where(*extra)) or 0)

    keys = {
        "journey_type": filters.journey_type,
        "status": filters.status,
        "inbox_visibility": filters.inbox_visibility,
        "suggested_assignment": filters.suggested_assignment,
        "suggested_priority": filters.suggested_priority,
    }
    total = await listcounts.total(
        session,
        listcounts.EPISODES,
        organization_id,
        keys,
        count_where=count_where,
        others=filters.patient_id is not None,
    )
    rows = await session.scalars(page)
    return rows.all(), total


def list_queries(
    organization_id: int, filters: EpisodeFilters, *, limit: int, offset: int
) -> tuple[Select[int], Select[Episode]]:
    """The count and the page of ``list_episodes``.

    The organisation and each filter's column lead an index that ends with the page's order
    (``created_at``, ``id``; migration 0014): the page is the first entries of one index
    range read backwards, and the count reads that range from the index alone. The patient
    filter reads ``ix_episodes_org_patient_journey`` (a patient's few episodes).
    """
    where = [Episode.organization_id == organization_id]
    # patient_id goes through the EntityId column type: "100" and 100 are the same patient.
    for column, value in (
        (Episode.patient_id, filters.patient_id),
        (Episode.journey_type, filters.journey_type),
        (Episode.status, filters.status),
        (Episode.inbox_visibility, filters.inbox_visibility),
        (Episode.suggested_assignment, filters.suggested_assignment),
        (Episode.suggested_priority, filters.suggested_priority),
    ):
        if value is not None:
            where.append(column == value)
    count = select(func.count()).select_from(Episode).where(*where)
    page = (
        select(Episode)
        .where(*where)
        .order_by(Episode.created_at.desc(), Episode.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return count, page


async def get_episode(
    session: AsyncSession, organization_id: int, episode_id: int
) -> Episode | None:
    return await session.scalar(_episodes(organization_id).where(Episode.id == episode_id))


async def episode_events(session: AsyncSession, episode_id: int) -> Sequence[EpisodeEvent]:
    rows = await session.scalars(
        select(EpisodeEvent)
        .where(EpisodeEvent.episode_id == episode_id)
        .order_by(EpisodeEvent.occurred_at, EpisodeEvent.id)
    )
    return rows.all()


_episodes_t: Table = Episode.__table__  # type: ignore[assignment]
_links_t: Table = EpisodeEvent.__table__  # type: ignore[assignment]

# Routing's statements, built once and run with Core on the session's connection (the
# dispatch runs them for every event). The episodes they return are built from the rows
# and not added to the session: their changes are the explicit statements below.
_OPEN_EPISODE = (
    select(_episodes_t)
    .where(
        _episodes_t.c.organization_id == bindparam("organization_id"),
        _episodes_t.c.patient_id == bindparam("patient_id"),
        _episodes_t.c.journey_type == bindparam("journey_type"),
        _episodes_t.c.status == "open",
    )
    .order_by(_episodes_t.c.created_at.desc(), _episodes_t.c.id.desc())
    .limit(1)
)
# Not a join. With statistics taken while the tables were empty (autovacuum off, say),
# PostgreSQL planned the join as a nested loop over every episode of the organisation with
# a scan of the links inside it: quadratic, seconds per dispatch once a drain had filled
# them. A scalar subquery is looked up once, whatever the statistics say.
_EPISODE_OF_EVENT = select(_episodes_t).where(
    _episodes_t.c.organization_id == bindparam("organization_id"),
    _episodes_t.c.id
    == select(_links_t.c.episode_id)
    .where(_links_t.c.event_pk == bindparam("event_pk"))
    .scalar_subquery(),
)
_INSERT_EPISODE = insert(_episodes_t).returning(_episodes_t.c.id)
_INSERT_EPISODE_HELD = insert(_episodes_t)
_EPISODE_HELD = "episodes.insert"
_TOUCH_EPISODE = (
    update(_episodes_t)
    .where(_episodes_t.c.id == bindparam("episode_id"))
    .values(updated_at=bindparam("now"))
)
_INSERT_LINK = insert(_links_t)
_LOCK_JOURNEY = text("SELECT pg_advisory_xact_lock(:key)")
# Many journeys' locks in one statement, taken in the order of the array (unnest keeps it).
_LOCK_JOURNEYS = text("SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) AS k").bindparams(
    bindparam("keys", type_=ARRAY(BigInteger))
)
JourneyKey = tuple[int, EntityRef, str]  # organisation, patient, journey type


def open_episodes_query(journeys: Sequence[JourneyKey]) -> Any:
    """Every open episode of the journeys: one range of ``ix_episodes_org_patient_journey``
    each."""
    columns = (_episodes_t.c.organization_id, _episodes_t.c.patient_id, _episodes_t.c.journey_type)
    return select(_episodes_t).where(
        tuple_(*columns).in_(list(journeys)), _episodes_t.c.status == "open"
    )


def links_of_events_query(event_pks: Sequence[int]) -> Any:
    """The links of the events, by the unique index on their keys."""
    return select(_links_t.c.event_pk, _links_t.c.episode_id).where(
        _links_t.c.event_pk.in_(list(event_pks))
    )


def episodes_by_id_query(organization_id: int, episode_ids: Sequence[int]) -> Any:
    return select(_episodes_t).where(
        _episodes_t.c.organization_id == organization_id,
        _episodes_t.c.id.in_(list(episode_ids)),
    )


def open_episode_query(organization_id: int, patient_id: EntityRef, journey_type: str) -> Any:
    """The patient's most recent open episode of the journey: the first entry of one range
    of ``ix_episodes_org_patient_journey``, which ends in ``(created_at, id)``."""
    return _OPEN_EPISODE.params(
        organization_id=organization_id, patient_id=patient_id, journey_type=journey_type
    )


def episode_of_event_query(organization_id: int, event_pk: int) -> Any:
    """The episode an event was linked to: its link by the event's key, then that episode."""
    return _EPISODE_OF_EVENT.params(organization_id=organization_id, event_pk=event_pk)


async def _one_episode(session: AsyncSession, stmt: Any) -> Episode | None:
    connection = await session.connection()
    row = (await connection.execute(stmt)).first()
    return built(Episode, row._mapping) if row is not None else None


async def find_open_episode(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, journey_type: str
) -> Episode | None:
    """The patient's most recent open episode of the journey (not added to the session)."""
    return await _one_episode(
        session, open_episode_query(organization_id, patient_id, journey_type)
    )


async def episode_of_event(
    session: AsyncSession, organization_id: int, event_pk: int
) -> Episode | None:
    """The episode an event was linked to (not added to the session)."""
    return await _one_episode(session, episode_of_event_query(organization_id, event_pk))


async def insert_episode(
    session: AsyncSession, values: dict[str, Any], *, hold: bool = False
) -> Episode:
    """A new episode, built from what was written: one statement, no read back.

    ``hold``: the caller does not go on after a refusal (``link_event``), so where the
    session draws ids ahead (``db.draws_ids``) the INSERT takes one and waits for the
    batch's end. The journey's lock, taken before, keeps a second open episode from racing it.
    """
    if hold and db.draws_ids(session):
        row = await db.insert_with_drawn_id(
            session, "episodes", _EPISODE_HELD, _INSERT_EPISODE_HELD, values
        )
        return built(Episode, row)
    connection = await session.connection()
    new_id = (await connection.execute(_INSERT_EPISODE, values)).scalar_one()
    return built(Episode, {"id": new_id, **values})


async def touch_episode(
    session: AsyncSession, episode: Episode, now: Any, *, hold: bool = False
) -> None:
    """An event joined the episode: it was updated now (``hold``: as ``insert_episode``'s;
    an episode whose INSERT is still held gets the time in its INSERT)."""
    if hold and db.defers_writes(session):
        identity = ("episodes", episode.id)
        if not db.amend(session, identity, _EPISODE_HELD, {"updated_at": now}):
            values = {"episode_id": episode.id, "now": now}
            await db.write(session, "episodes.touch", _TOUCH_EPISODE, values, row=identity)
    else:
        connection = await session.connection()
        await connection.execute(_TOUCH_EPISODE, {"episode_id": episode.id, "now": now})
    episode.updated_at = now


async def link_event(session: AsyncSession, values: dict[str, Any], *, hold: bool = False) -> None:
    """The event's link to its episode; the unique index on ``event_pk`` keeps it single.

    ``hold``: the caller holds the event's row lock and does not go on after a refusal, so
    the INSERT may be held for the batch's end (``db.write``).
    """
    if hold:
        row = ("episode_events", values["event_pk"])
        await db.write(session, "episodes.link", _INSERT_LINK, values, row=row)
        return
    connection = await session.connection()
    await connection.execute(_INSERT_LINK, values)


def _journey_lock_key(organization_id: int, patient_id: Any, journey_type: str) -> int:
    digest = hashlib.sha256(f"{organization_id}:{patient_id}:{journey_type}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_journey(
    session: AsyncSession, organization_id: int, patient_id: Any, journey_type: str
) -> None:
    """Serialise routing for one patient's journey, so two events routed at the same moment
    cannot both find no open episode and open two. SQLite has a single writer already."""
    if not is_postgresql(session):
        return
    key = _journey_lock_key(organization_id, patient_id, journey_type)
    connection = await session.connection()
    await connection.execute(_LOCK_JOURNEY, {"key": key})


async def lock_journeys(session: AsyncSession, journeys: Sequence[JourneyKey]) -> None:
    """``lock_journey`` of many journeys in one statement, in the order of their keys: two
    batches that share journeys then take their locks in one order, and cannot deadlock."""
    if not journeys or not is_postgresql(session):
        return
    keys = sorted({_journey_lock_key(*journey) for journey in journeys})
    connection = await session.connection()
    await connection.execute(_LOCK_JOURNEYS, {"keys": keys})


async def find_open_episodes(
    session: AsyncSession, journeys: Sequence[JourneyKey]
) -> dict[JourneyKey, Episode | None]:
    """``find_open_episode`` of many journeys in one read; None where a journey has none."""
    out: dict[JourneyKey, Episode | None] = dict.fromkeys(journeys)
    if not out:
        return out
    connection = await session.connection()
    newest: dict[JourneyKey, tuple[Any, int]] = {}
    for row in await connection.execute(open_episodes_query(list(out))):
        key = (row.organization_id, row.patient_id, row.journey_type)
        order = (row.created_at, row.id)
        if key in out and (key not in newest or order > newest[key]):
            newest[key] = order
            out[key] = built(Episode, row._mapping)
    return out


async def episodes_of_events(
    session: AsyncSession, organization_id: int, event_pks: Sequence[int]
) -> dict[int, Episode | None]:
    """``episode_of_event`` of many of one organisation's events: one read when none of them
    is linked yet, two when some are."""
    out: dict[int, Episode | None] = dict.fromkeys(event_pks)
    if not out:
        return out
    connection = await session.connection()
    links = {
        row.event_pk: row.episode_id
        for row in await connection.execute(links_of_events_query(list(out)))
    }
    if not links:  # the common case: new events, one statement
        return out
    rows = await connection.execute(
        episodes_by_id_query(organization_id, sorted(set(links.values())))
    )
    episodes = {row.id: built(Episode, row._mapping) for row in rows}
    for event_pk, episode_id in links.items():
        out[event_pk] = episodes.get(episode_id)
    return out
