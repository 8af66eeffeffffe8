"""The SQL of the one-time sign-in tickets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.console.models import ConsoleTicket
from careflow.db import insert_for


async def use_ticket(session: AsyncSession, jti: str, organization_id: int, now: datetime) -> bool:
    """Record the ticket as used; False if it was used before (two tabs, a replayed link)."""
    stmt = (
        insert_for(session)(ConsoleTicket)
        .values(jti=jti, organization_id=organization_id, used_at=now)
        .on_conflict_do_nothing(index_elements=["jti"])
        .returning(ConsoleTicket.jti)
    )
    return (await session.execute(stmt)).first() is not None
