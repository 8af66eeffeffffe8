"""Entity snapshots stored without an event (``PUT /v1/entities``, for backfills)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.entities import repository
from careflow.entities.validation import entity_id_problem, validate_entity_body
from careflow.errors import ValidationError
from careflow.kit.types import canonical_entity_id
from careflow.scheduling.service import schedule_appointment

log = structlog.get_logger("careflow.entities")


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
    stored = await repository.upsert_entity(
        session, principal.org_id, entity_type, path_id, data, as_of=now, replace=True
    )
    if entity_type == "appointment":
        await schedule_appointment(session, principal.org_id, {**stored.data, "id": path_id}, now)
    log.info(
        "entity_stored", entity_type=entity_type, entity_id=str(path_id), org_id=principal.org_id
    )
    return dict(stored.data)
