"""On PostgreSQL an INSERT of many rows at once (an executemany, as a worker's batch sends
its held writes) is one statement, so a statement trigger runs once for all the rows: the
lists' kept counts (``kit.listcounts``) get one delta for the batch, not one a row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.kit.listcounts import ListCountDelta

ROWS = 20


async def test_an_executemany_insert_runs_the_count_trigger_once(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the kept counts' triggers are PostgreSQL's")
    at = datetime(2025, 2, 15, 10, 0, tzinfo=UTC)
    rows = [
        {
            "organization_id": 1,
            "actor_sub": "careflow",
            "actor_role": "system",
            "action": "create",
            "object_type": "episode",
            "object_id": str(i),
            "created_at": at,
        }
        for i in range(ROWS)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(AuditEntry), rows)
        deltas = (await conn.execute(select(func.count(), func.sum(ListCountDelta.n)))).one()
    assert tuple(deltas) == (1, ROWS)
