"""SQL of organisation settings: one row per organisation, keyed by its id."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.organizations.models import OrganizationSettings


async def get(session: AsyncSession, organization_id: int) -> OrganizationSettings | None:
    # ``session.get``: a transaction that sends many SMS reads the row once.
    return await session.get(OrganizationSettings, organization_id)


def add(session: AsyncSession, row: OrganizationSettings) -> None:
    session.add(row)
