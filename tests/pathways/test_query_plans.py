"""Hot lookups keep a linear plan when PostgreSQL's statistics say the tables are empty but
they are not (statistics taken on a new database, with autovacuum off)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.pathways.repository import episode_of_event_query

FILL = [
    "INSERT INTO events (organization_id, event_id, type, occurred_at, data, status, created_at)"
    " SELECT 1, 'evt-' || g, 'patient.onboarded', now(), '{}', 'processed', now()"
    " FROM generate_series(1, 300) g",
    "INSERT INTO episodes (organization_id, patient_id, journey_type, status, inbox_visibility,"
    " suggested_assignment, suggested_priority, expected_next_actor, priority, created_at,"
    " updated_at) SELECT 1, g::text, 'onboarding', 'open', 'visible', 'care_team', 'normal',"
    " 'patient', 'normal', now(), now() FROM generate_series(1, 300) g",
    "INSERT INTO episode_events (episode_id, event_pk, type, occurred_at)"
    " SELECT e.id, v.id, 'patient.onboarded', now()"
    " FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM episodes) e"
    " JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM events) v ON v.n = e.n",
]


def node_types(plan: dict[str, Any]) -> list[str]:
    return [plan["Node Type"]] + [t for child in plan.get("Plans", []) for t in node_types(child)]


async def test_the_episode_of_an_event_is_not_a_loop_over_episodes(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    async with engine.connect() as conn:
        # Statistics of the empty tables, then rows they do not know of.
        for table in ("events", "episodes", "episode_events"):
            await conn.execute(text(f"ANALYZE {table}"))
        for statement in FILL:
            await conn.execute(text(statement))
        event_pk = await conn.scalar(text("SELECT max(event_pk) FROM episode_events"))
        stmt = episode_of_event_query(1, int(event_pk)).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        explained = await conn.scalar(text(f"EXPLAIN (FORMAT JSON) {stmt}"))
        found = (await conn.execute(text(str(stmt)))).first()
        await conn.commit()
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    types = node_types(plan)
    # The join it replaced was planned as a nested loop over every episode of the org.
    assert not {"Nested Loop", "Hash Join", "Merge Join"} & set(types), types
    assert found is not None
