"""The claim's statements read the queue's index on PostgreSQL, for every group, the jobs of
no organisation included: no sequential scan of the jobs and no sort of the due ones (the
planner does not take ``organization_id IS NULL`` as fixing that column, so those
statements order by the index's leading columns; ``jobs.claim``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.jobs import claim
from careflow.jobs.queue import enqueue_many
from careflow.kit.clock import FrozenClock
from tests.fixtures.plans import plan_nodes

INDEX = "ix_jobs_queued_organization"
JOBS = 5000  # a group's due jobs: enough that a scan of them all is the dearer plan


async def plan_of(session: AsyncSession, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    clause = getattr(stmt, "element", stmt)  # a claim's TextualSelect wraps its text
    explained = text(f"EXPLAIN (FORMAT JSON) {clause.text}").bindparams(
        *clause._bindparams.values()
    )
    return plan_nodes(await session.scalar(explained, params))


@pytest.fixture
async def queued(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    async with sessionmaker() as session, session.begin():
        for org in (None, 1):
            await enqueue_many(
                session,
                "noop",
                [({}, org, None) for _ in range(JOBS)],
                run_at=clock.now() - timedelta(minutes=1),
                now=clock.now(),
            )
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE jobs"))
        await conn.commit()


@pytest.mark.parametrize(
    ("name", "stmt", "extra"),
    [
        ("no organisation's round", claim._PG_ROUND_NULL, {}),
        ("organisations' round", claim._PG_ROUND, {"orgs": [1], "wanted": 50}),
        ("groups' heads", claim._GROUP_HEADS, None),
    ],
)
async def test_each_claim_statement_reads_the_index_and_sorts_nothing(
    queued: None,
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    name: str,
    stmt: Any,
    extra: dict[str, Any] | None,
) -> None:
    params: dict[str, Any] = {}
    if extra is not None:
        now = clock.now()
        params = {"worker": "w", "now": now, "lease_until": now + timedelta(seconds=30)}
        params |= {"share": 50, **extra}
    async with sessionmaker() as session:
        plan = await plan_of(session, stmt, params)
    kinds = [n["Node Type"] for n in plan]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, (name, kinds)
    assert INDEX in {n.get("Index Name") for n in plan}, (name, plan)
