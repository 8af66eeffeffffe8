"""The reads scheduling makes that no other domain's repository offers.

Scheduling owns no table: its fires are jobs (removed through ``jobs.store``), its rules are
read through ``automations.repository`` and one appointment through ``entities.repository``.
What is left is the walk over an organisation's appointments when a rule's fires are
recomputed. Reads only, scoped to the organisation.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.entities.models import Entity


async def appointments(session: AsyncSession, organization_id: int) -> Sequence[Entity]:
    """Every stored appointment snapshot of the organisation, cancelled ones included."""
    rows = await session.scalars(
        select(Entity).where(
            Entity.organization_id == organization_id, Entity.entity_type == "appointment"
        )
    )
    return rows.all()
