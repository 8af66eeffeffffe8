"""Episodes: routing an ingested event into the inbox, and the episodes the API shows."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record, record_by_system
from careflow.auth import Principal
from careflow.errors import ValidationError, not_found
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.pathways import repository
from careflow.pathways.catalog import TRIGGERS, BaseConfig, TriggerType
from careflow.pathways.models import Episode, EpisodeEvent
from careflow.pathways.resolution import resolve
from careflow.pathways.schemas import EpisodePatch

# --- routing ------------------------------------------------------------------------------


def patient_of(trigger: TriggerType, context: Mapping[str, Any]) -> EntityRef | None:
    """The event's patient: ``context.patient.id``, else its entity's ``patient_id``."""
    candidates = []
    patient = context.get("patient")
    if isinstance(patient, Mapping):
        candidates.append(patient.get("id"))
    entity = context.get(trigger.entity_type)
    if isinstance(entity, Mapping):
        candidates.append(entity.get("patient_id"))
    for value in candidates:
        if value is None:
            continue
        try:
            return canonical_entity_id(value)
        except TypeError:
            continue
    return None


@dataclass(slots=True)
class RouteReads:
    """What a batch of dispatches read for routing before any of them ran: the events'
    episodes (for a rerun), the routing config of each event, and each journey that reuses
    an open episode, locked, with its open episode (kept current as the batch opens some)."""

    linked: dict[int, Episode | None] = dataclasses.field(default_factory=dict)  # by event pk
    configs: dict[int, BaseConfig] = dataclasses.field(default_factory=dict)  # by event pk
    open: dict[repository.JourneyKey, Episode | None] = dataclasses.field(default_factory=dict)


async def read_routes(
    session: AsyncSession, events: Sequence[tuple[int, int, str, Mapping[str, Any]]]
) -> RouteReads:
    """The reads of routing ``events`` (organisation, event pk, type, context): one statement
    each for the whole batch, the journeys' locks in one order.

    Taking the locks before any event of the batch is routed keeps two batches that share
    journeys from deadlocking: each takes them in key order, where routing event by event
    would take them in the order of its events.
    """
    reads = RouteReads()
    by_org: dict[int, list[int]] = {}
    for organization_id, event_pk, _, _ in events:
        by_org.setdefault(organization_id, []).append(event_pk)
    for organization_id, pks in by_org.items():
        reads.linked.update(await repository.episodes_of_events(session, organization_id, pks))
    journeys: set[repository.JourneyKey] = set()
    for organization_id, event_pk, event_type, context in events:
        trigger = TRIGGERS.get(event_type)
        if trigger is None or reads.linked.get(event_pk) is not None:
            continue
        resolved = await resolve(session, organization_id, event_type, context, explain=False)
        reads.configs[event_pk] = resolved.config
        patient_id = patient_of(trigger, context)
        if resolved.config["creation_mode"] == "reuse_open" and patient_id is not None:
            journeys.add((organization_id, patient_id, resolved.config["journey_type"]))
    await repository.lock_journeys(session, list(journeys))  # in key order, whatever ours
    reads.open = await repository.find_open_episodes(session, list(journeys))
    return reads


async def route_event(
    session: AsyncSession,
    *,
    organization_id: int,
    event_pk: int,
    event_id: str | None,
    event_type: str,
    occurred_at: datetime,
    context: Mapping[str, Any],
    now: datetime,
    event_locked: bool = False,
    reads: RouteReads | None = None,
) -> Episode | None:
    """Create, reuse or suppress an episode for a stored event, per its resolved config.

    Idempotent per ``event_pk`` (a retried job finds the episode it linked before).
    Returns the episode the event belongs to, or None when routing suppressed it (or the
    event type is not a pathway trigger). Writes in ``session``'s transaction; never commits.

    ``event_locked``: the caller holds the event's row lock (the dispatch), so no other
    transaction can link the event between the look-up and the insert, and the savepoint
    that would let this one go on after such a race is skipped. Were the unique index to
    refuse the link anyway, the caller's transaction fails and its job runs again.

    ``reads``, when the event is routed in a batch, holds what ``read_routes`` read ahead
    for it; what is not there is read here.
    """
    if reads is not None and event_pk in reads.linked:
        linked = reads.linked.pop(event_pk)
    else:
        linked = await repository.episode_of_event(session, organization_id, event_pk)
    if linked is not None:
        return linked
    trigger = TRIGGERS.get(event_type)
    if trigger is None:
        return None
    known = reads.configs.pop(event_pk, None) if reads is not None else None
    if known is not None:
        config = known
    else:
        resolved = await resolve(session, organization_id, event_type, context, explain=False)
        config = resolved.config
    mode = config["creation_mode"]
    if mode == "suppress":
        return None
    patient_id = patient_of(trigger, context)
    episode = None
    journey: repository.JourneyKey | None = None
    if patient_id is not None:
        journey = (organization_id, patient_id, config["journey_type"])
    if mode == "reuse_open" and journey is not None:
        if reads is not None and journey in reads.open:
            episode = reads.open[journey]  # locked ahead, and kept current by the batch
        else:
            await repository.lock_journey(session, *journey)
            episode = await repository.find_open_episode(session, *journey)
    opened = episode is None
    try:
        async with repository.unique_write(session, savepoint=not event_locked):
            if episode is None:
                episode = await repository.insert_episode(
                    session,
                    {
                        "organization_id": organization_id,
                        "patient_id": patient_id,
                        "journey_type": config["journey_type"],
                        "status": "open",
                        "inbox_visibility": config["inbox_visibility"],
                        "suggested_assignment": config["suggested_assignment"],
                        "suggested_priority": config["suggested_priority"],
                        "expected_next_actor": config["expected_next_actor"],
                        "assignee": config["suggested_assignment"],
                        "priority": config["suggested_priority"],
                        "created_at": now,
                        "updated_at": now,
                    },
                    hold=event_locked,
                )
            else:
                await repository.touch_episode(session, episode, now, hold=event_locked)
            await repository.link_event(
                session,
                {
                    "episode_id": episode.id,
                    "event_pk": event_pk,
                    "event_id": event_id,
                    "type": event_type,
                    "occurred_at": occurred_at,
                },
                hold=event_locked,
            )
    except IntegrityError:
        # Another worker linked this event between our check and our insert. On SQLite the
        # transaction is gone with the refusal; the job's retry takes the early return above.
        if repository.is_sqlite(session) or event_locked:
            raise
        linked = await repository.episode_of_event(session, organization_id, event_pk)
        if linked is None:
            raise
        return linked
    if opened:
        await record_by_system(
            session,
            organization_id=organization_id,
            action="create",
            object_type="episode",
            object_id=episode.id,
            before=None,
            after=_created_fields(episode, event_pk),
            now=now,
        )
    if reads is not None and journey is not None and journey in reads.open:
        # The journey's newest open episode now (a create_new route opens one too): the
        # next event of the batch that reuses the journey's open episode joins it.
        reads.open[journey] = episode
    return episode


def _created_fields(episode: Episode, event_pk: int) -> dict[str, Any]:
    """An opened episode as its audit entry keeps it: ids and routing fields, and the
    careflow id of the event that opened it (``GET /v1/events/{id}``)."""
    fields = {name: getattr(episode, name) for name in EPISODE_CREATED_FIELDS}
    return {**fields, "event": event_pk}


# --- the episodes API ---------------------------------------------------------------------

EPISODE_AUDIT_FIELDS = ("status", "assignee", "priority")
EPISODE_CREATED_FIELDS = (
    "patient_id",
    "journey_type",
    "status",
    "inbox_visibility",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
    "assignee",
    "priority",
)


async def list_episodes(
    session: AsyncSession,
    principal: Principal,
    filters: repository.EpisodeFilters,
    *,
    limit: int,
    offset: int,
) -> tuple[Sequence[Episode], int]:
    return await repository.list_episodes(
        session, principal.org_id, filters, limit=limit, offset=offset
    )


async def get_episode(session: AsyncSession, principal: Principal, episode_id: str) -> Episode:
    # Ids are integers; anything else names no episode (404, like another org's episode).
    # ASCII only: str.isdigit() also holds for "²", which int() refuses.
    if not (episode_id.isascii() and episode_id.isdigit()) or len(episode_id) > 18:
        raise not_found("episode")
    episode = await repository.get_episode(session, principal.org_id, int(episode_id))
    if episode is None:
        raise not_found("episode")
    return episode


async def get_episode_with_events(
    session: AsyncSession, principal: Principal, episode_id: str
) -> tuple[Episode, Sequence[EpisodeEvent]]:
    episode = await get_episode(session, principal, episode_id)
    return episode, await repository.episode_events(session, episode.id)


async def update_episode(
    session: AsyncSession,
    principal: Principal,
    episode_id: str,
    body: EpisodePatch,
    now: datetime,
) -> Episode:
    episode = await get_episode(session, principal, episode_id)
    sent = body.model_fields_set
    nulls = [f for f in ("status", "priority") if f in sent and getattr(body, f) is None]
    if nulls:
        raise ValidationError(details=[{"field": f, "message": "may not be null"} for f in nulls])
    before = {f: getattr(episode, f) for f in EPISODE_AUDIT_FIELDS}
    for field in sent:
        setattr(episode, field, getattr(body, field))
    after = {f: getattr(episode, f) for f in EPISODE_AUDIT_FIELDS}
    if after == before:
        return episode
    episode.updated_at = now
    await session.flush()
    old, new = changed_fields(before, after)
    await record(
        session,
        principal,
        action="update",
        object_type="episode",
        object_id=episode.id,
        before=old,
        after=new,
        now=now,
    )
    return episode
