"""``PUT /v1/entities/{entity_type}/{id}``: store an entity snapshot without an event."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from careflow.auth import IngestDep
from careflow.entities.catalog import ENTITY_TYPES
from careflow.events import service
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.schemas import DataEnvelope

# Listed with the events in the API document: a backfill is an ingestion without an event.
router = APIRouter(tags=["events"])

ENTITY_EXAMPLE = {"id": 100, "email": "ada@example.com", "first_name": "Ada"}


@router.put(
    "/v1/entities/{entity_type}/{id}",
    summary="Store an entity snapshot without an event (admin, service)",
    description=(
        "For backfills: the body is the entity object itself, as it would appear under "
        "`data` in `POST /v1/events`; it replaces the stored snapshot. `entity_type` is one of "
        "`patient`, `appointment`, `invoice`, `form` (else 400). A body `id`, when given, must "
        "equal the path id. No rule runs."
    ),
)
async def put_entity(
    session: SessionDep,
    principal: IngestDep,
    clock: ClockDep,
    entity_type: Annotated[
        str, Path(max_length=32, json_schema_extra={"enum": list(ENTITY_TYPES)})
    ],
    entity_id: Annotated[str, Path(alias="id", max_length=128)],
    body: Annotated[dict[str, Any], Body(examples=[ENTITY_EXAMPLE])],
) -> DataEnvelope[dict[str, Any]]:
    stored = await service.put_entity(
        session, principal, entity_type, entity_id, body, now=clock.now()
    )
    return DataEnvelope(data=stored)
