"""/v1/episodes: the practice inbox (automations-family envelope: not a pathway path)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from careflow.auth import StaffDep
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, PageMeta
from careflow.pathways import episodes, repository
from careflow.pathways.schemas import (
    EpisodeDetailOut,
    EpisodeEventOut,
    EpisodeOut,
    EpisodePatch,
    InboxVisibility,
    Priority,
)

router = APIRouter(prefix="/v1/episodes", tags=["episodes"])


@router.get("", summary="List episodes (newest first)", response_model=ListEnvelope[EpisodeOut])
async def list_episodes(
    session: SessionDep,
    principal: StaffDep,
    page: PageDep,
    patient_id: Annotated[str | None, Query(max_length=128)] = None,
    journey_type: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
    inbox_visibility: Annotated[InboxVisibility | None, Query()] = None,
    suggested_assignment: Annotated[str | None, Query(max_length=200)] = None,
    suggested_priority: Annotated[Priority | None, Query()] = None,
) -> ListEnvelope[EpisodeOut]:
    filters = repository.EpisodeFilters(
        patient_id=patient_id,
        journey_type=journey_type,
        status=status,
        inbox_visibility=inbox_visibility,
        suggested_assignment=suggested_assignment,
        suggested_priority=suggested_priority,
    )
    rows, total = await episodes.list_episodes(
        session, principal, filters, limit=page.limit, offset=page.offset
    )
    return ListEnvelope[EpisodeOut](
        data=[EpisodeOut.model_validate(r) for r in rows], meta=PageMeta(**page.meta(total))
    )


@router.get(
    "/{episode_id}",
    summary="Get an episode with its events in order",
    response_model=DataEnvelope[EpisodeDetailOut],
)
async def get_episode(
    episode_id: str, session: SessionDep, principal: StaffDep
) -> DataEnvelope[EpisodeDetailOut]:
    episode, events = await episodes.get_episode_with_events(session, principal, episode_id)
    detail = EpisodeDetailOut(
        **EpisodeOut.model_validate(episode).model_dump(),
        events=[EpisodeEventOut.model_validate(e) for e in events],
    )
    return DataEnvelope[EpisodeDetailOut](data=detail)


@router.patch(
    "/{episode_id}",
    summary="Change an episode's status, assignee or priority",
    response_model=DataEnvelope[EpisodeOut],
)
async def update_episode(
    episode_id: str,
    body: EpisodePatch,
    session: SessionDep,
    principal: StaffDep,
    clock: ClockDep,
) -> DataEnvelope[EpisodeOut]:
    episode = await episodes.update_episode(session, principal, episode_id, body, clock.now())
    return DataEnvelope[EpisodeOut](data=EpisodeOut.model_validate(episode))
