"""The executions, messages, episodes and audit-log lists: each filter's first page is one
index range read backwards (no sort of the organisation's rows), and ``meta.total`` is exact for every filter, alone and combined, in the caller's organisation, through inserts, updates, deletes, rollbacks and
the compaction of the kept counts (``kit.listcounts``)."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from careflow.audit import repository as audit_repository
from careflow.audit.repository import AuditFilters
from careflow.audit.repository import list_queries as audit_queries
from careflow.executions import repository as executions_repository
from careflow.executions.repository import ExecutionFilters
from careflow.executions.repository import list_queries as execution_queries
from careflow.kit import listcounts
from careflow.messages import repository as messages_repository
from careflow.messages.repository import MessageFilters
from careflow.messages.repository import list_queries as message_queries
from careflow.models import Base
from careflow.pathways import repository as pathways_repository
from careflow.pathways.repository import EpisodeFilters
from careflow.pathways.repository import list_queries as episode_queries
from tests.fixtures.lists import STEP, T0, N, rows
from tests.fixtures.plans import explain

MID = T0 + timedelta(minutes=STEP * N // 2, seconds=30)

# Each list's filters: one at a time, then combined; None: the organisation alone.
EXECUTIONS = [
    ExecutionFilters(),
    ExecutionFilters(status="failure"),
    ExecutionFilters(status="success"),
    ExecutionFilters(trigger_event="form.submitted"),
    ExecutionFilters(executed_from=MID),
    ExecutionFilters(executed_before=MID),
    ExecutionFilters(status="success", trigger_event="patient.onboarded", executed_from=MID),
    # Midnight bounds, bounds in one day, and bounds days apart (kept counts' day edges).
    ExecutionFilters(executed_from=T0 + timedelta(days=3), executed_before=T0 + timedelta(days=9)),
    ExecutionFilters(executed_from=MID, executed_before=MID + timedelta(hours=5)),
    ExecutionFilters(status="failure", executed_from=MID, executed_before=MID + timedelta(days=4)),
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
    AuditFilters(from_time=T0 + timedelta(days=2), to_time=T0 + timedelta(days=8)),
    AuditFilters(actor="admin-1", from_time=MID, to_time=MID + timedelta(days=3, minutes=1)),
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
            async with engine.connect() as other:
                autocommit = await other.execution_options(isolation_level="AUTOCOMMIT")
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


TOTALS = {
    "executions": lambda s, org, f: executions_repository.list_page(s, org, f, offset=0, limit=5),
    "messages": lambda s, org, f: messages_repository.list_for_org(s, org, f, offset=0, limit=5),
    "episodes": lambda s, org, f: pathways_repository.list_episodes(s, org, f, limit=5, offset=0),
    "audit_log": lambda s, org, f: audit_repository.list_entries(s, org, f, limit=5, offset=0),
}
CHANGES = [
    "UPDATE executions SET status = 'failure' WHERE id % 7 = 0",
    "DELETE FROM executions WHERE id % 11 = 0",
    "UPDATE messages SET status = 'delivered' WHERE execution_id % 3 = 0",
    "UPDATE episodes SET status = 'closed', suggested_priority = 'high' WHERE id % 5 = 0",
    "DELETE FROM episodes WHERE id % 13 = 0",
]


async def assert_totals(conn: AsyncConnection) -> None:
    async with AsyncSession(bind=conn) as session:
        for table, _, cases in LISTS:
            for org in (1, 2):
                for filters in cases:
                    _, total = await TOTALS[table](session, org, filters)
                    expected = await reference_count(conn, table, org, filters)
                    assert total == expected, (table, org, filters)


async def compact(conn: AsyncConnection) -> None:
    async with AsyncSession(bind=conn) as session:
        await listcounts.compact(session)
    await conn.commit()


async def test_totals_stay_exact_through_writes_and_compaction(conn: AsyncConnection) -> None:
    await assert_totals(conn)
    await compact(conn)
    await assert_totals(conn)
    for statement in CHANGES:
        await conn.execute(text(statement))
    await conn.commit()
    more = rows(2)
    for table in ("executions", "messages"):
        for row in more[table]:
            row["id"] = row["id"] + 1 if table == "executions" else row["id"] + "b"
            row["organization_id"] = 1
    for table, values in more.items():
        if table == "messages":
            values = [{**v, "execution_id": v["execution_id"] + 1} for v in values]
        await conn.execute(insert(Base.metadata.tables[table]), values)
    await conn.commit()
    await assert_totals(conn)  # deltas on top of compacted counts
    await compact(conn)
    await assert_totals(conn)


async def test_a_rolled_back_write_and_a_deleted_rule_move_the_totals_as_the_rows(
    conn: AsyncConnection,
) -> None:
    await conn.execute(text("DELETE FROM executions WHERE organization_id = 1 AND id % 2 = 0"))
    await conn.rollback()
    rule = {
        "organization_id": 1,
        "name": "r",
        "enabled": True,
        "trigger_event": "patient.onboarded",
        "trigger_config": {},
        "conditions": {},
        "actions": [],
        "version": 1,
        "created_at": T0,
        "updated_at": T0,
    }
    rules = Base.metadata.tables["automation_rules"]
    rule_id = (await conn.execute(insert(rules).returning(rules.c.id), rule)).scalar_one()
    await conn.execute(
        text("UPDATE executions SET automation_rule_id = :r WHERE id % 4 = 0"), {"r": rule_id}
    )
    await conn.commit()
    by_rule = ExecutionFilters(automation_rule_id=rule_id)
    async with AsyncSession(bind=conn) as session:
        assert (await TOTALS["executions"](session, 1, by_rule))[1] == N // 4
    await compact(conn)
    # The rule's executions keep their history with no rule (ON DELETE SET NULL).
    await conn.execute(rules.delete().where(rules.c.id == rule_id))
    await conn.commit()
    async with AsyncSession(bind=conn) as session:
        assert (await TOTALS["executions"](session, 1, by_rule))[1] == 0
        assert (await TOTALS["executions"](session, 1, ExecutionFilters()))[1] == N
    await assert_totals(conn)
