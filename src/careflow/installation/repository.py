"""Reading the installation row, and writing it the first time (whoever comes first wins)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import insert_for
from careflow.installation.models import SINGLETON, Installation


async def get(session: AsyncSession) -> Installation | None:
    return await session.scalar(select(Installation).where(Installation.id == SINGLETON))


async def insert_if_absent(
    session: AsyncSession, *, installation_id: str, signing_key: str, now: datetime
) -> None:
    """Write the row unless one exists: two processes starting together keep the first."""
    stmt = (
        insert_for(session)(Installation)
        .values(
            id=SINGLETON, installation_id=installation_id, signing_key=signing_key, created_at=now
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.execute(stmt)
