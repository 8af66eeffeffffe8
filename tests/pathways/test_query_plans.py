"""Hot lookups keep a linear plan when PostgreSQL's statistics say the tables are empty but
they are not (statistics taken on a new database, with autovacuum off)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from careflow.pathways.repository import (
    episode_of_event_query,
    episodes_by_id_query,
    links_of_events_query,
    open_episode_query,
    open_episodes_query,
)
from tests.fixtures.plans import explain as plan_of

FILL = [
    "INSERT INTO events (organization_id, event_id, type, occurred_at, data, status, created_at)"
    " SELECT 1, 'evt-' || g, 'patient.onboarded', now(), '{}', 'processed', now()"
    " FROM generate_series(1, 300) g",
    "INSERT INTO episodes (organization_id, patient_id, journey_type, status, inbox_visibility,"
    " suggested_assignment, suggested_priority, expected_next_actor, priority, created_at,"
    " updated_at) SELECT 1, g::text, 'onboarding', 'open', 'visible', 'care_team', 'normal',"
    " 'patient', 'normal', now(), now() FROM generate_series(1, 3000) g",
    "INSERT INTO episode_events (episode_id, event_pk, type, occurred_at)"
    " SELECT e.id, v.id, 'patient.onboarded', now()"
    " FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM episodes) e"
    " JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM events) v ON v.n = e.n",
]


async def stale_statistics(conn: AsyncConnection) -> None:
    """Statistics of the empty tables, then rows they do not know of."""
    for table in ("events", "episodes", "episode_events"):
        await conn.execute(text(f"ANALYZE {table}"))
    for statement in FILL:
        await conn.execute(text(statement))


async def explain(conn: AsyncConnection, stmt: Any) -> list[str]:
    return [node["Node Type"] for node in await plan_of(conn, stmt)]


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    async with engine.connect() as connection:
        await stale_statistics(connection)
        yield connection
        await connection.commit()


async def test_the_episode_of_an_event_is_not_a_loop_over_episodes(
    conn: AsyncConnection,
) -> None:
    event_pk = await conn.scalar(text("SELECT max(event_pk) FROM episode_events"))
    types = await explain(conn, episode_of_event_query(1, int(event_pk)))
    # The join it replaced was planned as a nested loop over every episode of the org.
    assert not {"Nested Loop", "Hash Join", "Merge Join"} & set(types), types


async def test_the_open_episode_is_one_index_probe(conn: AsyncConnection) -> None:
    types = await explain(conn, open_episode_query(1, "150", "onboarding"))
    # Before 0003: a backward scan of the organisation's episodes by created_at, then a sort.
    assert types == ["Limit", "Index Scan"] or types == ["Limit", "Index Only Scan"], types


async def test_a_batch_reads_its_links_and_open_episodes_without_a_join(
    conn: AsyncConnection,
) -> None:
    rows = await conn.execute(text("SELECT event_pk, episode_id FROM episode_events LIMIT 10"))
    links = list(rows)
    journeys = [(1, str(n), "onboarding") for n in range(100, 110)]
    # The batch's episodes are index probes, as one dispatch's are.
    assert await explain(conn, episodes_by_id_query(1, [i for _, i in links])) == ["Index Scan"]
    assert await explain(conn, open_episodes_query(journeys)) == ["Index Scan"]
    # Its links are one scan of one table, no join. On statistics that say the table is
    # empty that scan is sequential, as the one-event look-up's sub-plan is: one a batch
    # now rather than one an event.
    assert len(await explain(conn, links_of_events_query([pk for pk, _ in links]))) == 1
