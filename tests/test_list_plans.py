"""The executions, messages, episodes and audit-log lists: each filter's first page is one
index range read backwards (no sort of the organisation's rows), and the count is exact for every filter, alone and combined, in the caller's organisation."""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from careflow.audit.repository import AuditFilters
from careflow.audit.repository import list_queries as audit_queries
from careflow.executions.repository import ExecutionFilters
from careflow.executions.repository import list_queries as execution_queries
from careflow.messages.repository import MessageFilters
from careflow.messages.repository import list_queries as message_queries
from careflow.models import Base
from careflow.pathways.repository import EpisodeFilters
from careflow.pathways.repository import list_queries as episode_queries

T0 = datetime(2025, 1, 1, tzinfo=UTC)
N = 4000  # rows of organisation 1 in each table; organisation 2 has a tenth


def rows(org: int) -> dict[str, list[dict[str, Any]]]:
    """Organisation 1: N of each; organisation 2: a tenth. One a minute, newest last."""
    gs = [g for g in range(1, N + 1) if org == 1 or g % 10 == 0]
    at = [T0 + timedelta(minutes=g) for g in gs]
    base = {"organization_id": org}
    return {
        "executions": [
            {
                **base,
                "id": org * 100_000 + g,
                "automation_rule_id": None,
                "automation_rule_name": "r",
                "rule_version": 1,
                "trigger_event": ["patient.onboarded", "form.submitted"][g % 2],
                "trigger_entity_type": "patient",
                "trigger_entity_id": str(g % 50),
                "patient_id": str(g % 50),
                "occurrence_key": f"k{org}-{g}",
                "status": ["success", "success", "success", "failure", "skipped"][g % 5],
                "actions": [],
                "context": {},
                "executed_at": t,
            }
            for g, t in zip(gs, at, strict=True)
        ],
        "messages": [
            {
                **base,
                "id": f"msg_{org}_{g}",
                "channel": ["email", "sms"][g % 2],
                "patient_id": str(g % 50),
                "recipient": "a@example.test",
                "template": "t",
                "body": "b",
                "status": ["sent", "delivered", "failed"][g % 3],
                "provider": "smtp",
                "attempts": 1,
                "execution_id": org * 100_000 + g,
                "action_index": 0,
                "created_at": t,
            }
            for g, t in zip(gs, at, strict=True)
        ],
        "episodes": [
            {
                **base,
                "patient_id": str(g % 50),
                "journey_type": ["onboarding", "referral"][g % 2],
                "status": ["open", "closed"][g % 3 // 2],
                "inbox_visibility": ["visible", "hidden"][g % 4 // 3],
                "suggested_assignment": ["nurse", "front_desk"][g % 5 // 4],
                "suggested_priority": ["low", "high"][g % 6 // 5],
                "expected_next_actor": "practice",
                "priority": "low",
                "created_at": t,
                "updated_at": t,
            }
            for g, t in zip(gs, at, strict=True)
        ],
        "audit_log": [
            {
                **base,
                "actor_sub": ["admin-1", "admin-2"][g % 2],
                "actor_role": "admin",
                "action": "update",
                "object_type": ["episode", "automation_rule", "template"][g % 3],
                "object_id": str(g % 50),
                "created_at": t,
            }
            for g, t in zip(gs, at, strict=True)
        ],
    }


MID = T0 + timedelta(minutes=N // 2)

# Each list's filters: one at a time, then combined; None: the organisation alone.
EXECUTIONS = [
    ExecutionFilters(),
    ExecutionFilters(status="failure"),
    ExecutionFilters(status="success"),
    ExecutionFilters(trigger_event="form.submitted"),
    ExecutionFilters(executed_from=MID),
    ExecutionFilters(executed_before=MID),
    ExecutionFilters(status="success", trigger_event="patient.onboarded", executed_from=MID),
]
MESSAGES = [
    MessageFilters(),
    MessageFilters(channel="sms"),
    MessageFilters(status="failed"),
    MessageFilters(patient_id="7"),
    MessageFilters(channel="email", status="delivered", patient_id="7"),
]
EPISODES = [
    EpisodeFilters(),
    EpisodeFilters(journey_type="referral"),
    EpisodeFilters(status="open"),
    EpisodeFilters(inbox_visibility="hidden"),
    EpisodeFilters(suggested_assignment="front_desk"),
    EpisodeFilters(suggested_priority="high"),
    EpisodeFilters(patient_id="7"),
    EpisodeFilters(status="open", journey_type="referral", suggested_priority="low"),
]
AUDIT = [
    AuditFilters(),
    AuditFilters(object_type="template"),
    AuditFilters(object_id="7"),
    AuditFilters(actor="admin-2"),
    AuditFilters(from_time=MID),
    AuditFilters(to_time=MID),
    AuditFilters(object_type="episode", object_id="7", actor="admin-1", to_time=MID),
]

# What the filters mean, as plain SQL over the same rows (the count's reference).
COLUMNS = {
    "automation_rule_id": "automation_rule_id",
    "status": "status",
    "trigger_event": "trigger_event",
    "channel": "channel",
    "execution_id": "execution_id",
    "patient_id": "patient_id",
    "journey_type": "journey_type",
    "inbox_visibility": "inbox_visibility",
    "suggested_assignment": "suggested_assignment",
    "suggested_priority": "suggested_priority",
    "object_type": "object_type",
    "object_id": "object_id",
    "actor": "actor_sub",
}
RANGES = {
    "executed_from": ("executed_at", operator.ge),
    "executed_before": ("executed_at", operator.lt),
    "from_time": ("created_at", operator.ge),
    "to_time": ("created_at", operator.le),
}


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [n for child in plan.get("Plans", []) for n in nodes(child)]


async def explain(conn: AsyncConnection, stmt: Any) -> list[dict[str, Any]]:
    compiled = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    explained = await conn.scalar(text(f"EXPLAIN (FORMAT JSON) {compiled}"))
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    return nodes(plan)


async def reference_count(conn: AsyncConnection, table: str, org: int, filters: Any) -> int:
    columns = Base.metadata.tables[table].c
    where = [columns.organization_id == org]
    for field in dataclasses.fields(filters):
        value = getattr(filters, field.name)
        if value is None:
            continue
        column, op = (
            RANGES[field.name] if field.name in RANGES else (COLUMNS[field.name], operator.eq)
        )
        where.append(op(columns[column], value))
    stmt = select(func.count()).select_from(Base.metadata.tables[table]).where(*where)
    return int(await conn.scalar(stmt) or 0)


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        for org in (1, 2):
            for table, values in rows(org).items():
                await connection.execute(insert(Base.metadata.tables[table]), values)
        await connection.commit()
        if engine.dialect.name == "postgresql":
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("executions", "messages", "episodes", "audit_log"):
                await autocommit.execute(text(f"VACUUM (ANALYZE) {table}"))
        yield connection


LISTS = [
    ("executions", execution_queries, EXECUTIONS),
    ("messages", message_queries, MESSAGES),
    ("episodes", episode_queries, EPISODES),
    ("audit_log", audit_queries, AUDIT),
]


@pytest.mark.parametrize(("table", "queries", "cases"), LISTS, ids=[t for t, *_ in LISTS])
async def test_the_count_is_exact_for_every_filter_in_each_organisation(
    conn: AsyncConnection, table: str, queries: Any, cases: list[Any]
) -> None:
    for org in (1, 2):
        for filters in cases:
            count, page = queries(org, filters, offset=0, limit=20)
            expected = await reference_count(conn, table, org, filters)
            assert await conn.scalar(count) == expected, (org, filters)
            assert len((await conn.execute(page)).all()) == min(20, expected), (org, filters)
    # The filters select something and not everything: the cases mean something.
    assert 0 < await reference_count(conn, table, 1, cases[1]) < N


@pytest.mark.parametrize(("table", "queries", "cases"), LISTS, ids=[t for t, *_ in LISTS])
async def test_each_first_page_reads_one_index_range(
    conn: AsyncConnection, engine: AsyncEngine, table: str, queries: Any, cases: list[Any]
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    for filters in cases:
        used = [f.name for f in dataclasses.fields(filters) if getattr(filters, f.name) is not None]
        if len(used) > 1 or used in (["patient_id"], ["object_id"]):
            continue  # combined filters, or a patient's or an object's few rows
        _, page = queries(1, filters, offset=0, limit=20)
        plan = await explain(conn, page)
        # Limit over a backward index scan: no sort, and no row read only to be dropped.
        assert [n["Node Type"] for n in plan] == ["Limit", "Index Scan"], (filters, plan)
        assert plan[1]["Scan Direction"] == "Backward", (filters, plan)
        assert "Filter" not in plan[1], (filters, plan)
