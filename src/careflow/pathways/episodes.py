"""Episodes: routing an ingested event into the inbox, and the episodes the API shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record
from careflow.auth import Principal
from careflow.errors import ValidationError, not_found
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.pathways import repository
from careflow.pathways.catalog import TRIGGERS, TriggerType
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
) -> Episode | None:
    """Create, reuse or suppress an episode for a stored event, per its resolved config.

    Idempotent per ``event_pk`` (a retried job finds the episode it linked before).
    Returns the episode the event belongs to, or None when routing suppressed it (or the
    event type is not a pathway trigger). Writes in ``session``'s transaction; never commits.

    ``event_locked``: the caller holds the event's row lock (the dispatch), so no other
    transaction can link the event between the look-up and the insert, and the savepoint
    that would let this one go on after such a race is skipped. Were the unique index to
    refuse the link anyway, the caller's transaction fails and its job runs again.
    """
    linked = await repository.episode_of_event(session, organization_id, event_pk)
    if linked is not None:
        return linked
    trigger = TRIGGERS.get(event_type)
    if trigger is None:
        return None
    config = (await resolve(session, organization_id, event_type, context, explain=False)).config
    mode = config["creation_mode"]
    if mode == "suppress":
        return None
    patient_id = patient_of(trigger, context)
    episode = None
    if mode == "reuse_open" and patient_id is not None:
        await repository.lock_journey(session, organization_id, patient_id, config["journey_type"])
        episode = await repository.find_open_episode(
            session, organization_id, patient_id, config["journey_type"]
        )
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
                )
            else:
                await repository.touch_episode(session, episode, now)
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
    return episode


# --- the episodes API ---------------------------------------------------------------------

EPISODE_AUDIT_FIELDS = ("status", "assignee", "priority")


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
