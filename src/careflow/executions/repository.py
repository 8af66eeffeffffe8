"""SQL of executions and their action results; tenant queries start from the org filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from careflow import db
from careflow.db import built, insert_if_absent, one_of
from careflow.executions.models import Execution, ExecutionAction
from careflow.kit import listcounts
from careflow.kit.types import EntityRef


def _locking(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _scoped(organization_id: int) -> Select[Execution]:
    return select(Execution).where(Execution.organization_id == organization_id)


@dataclass(frozen=True, slots=True)
class ExecutionFilters:
    automation_rule_id: int | None = None
    status: str | None = None
    trigger_event: str | None = None
    executed_from: datetime | None = None  # inclusive
    executed_before: datetime | None = None  # exclusive
    patient_id: EntityRef | None = None


async def insert_execution(
    session: AsyncSession, values: dict[str, Any], *, hold: bool = False
) -> Execution | None:
    """The new execution, or None when the rule already ran for this occurrence.

    ``hold``: the caller knows the occurrence has no execution yet (a dispatch of an event
    it holds locked and unprocessed), so where the session draws ids ahead (``db.draws_ids``)
    the INSERT takes one and is held for the batch's end, without ON CONFLICT. Were the
    unique index to refuse it there anyway, the batch fails and each of its jobs runs again
    alone, down the path below.
    """
    if hold and db.draws_ids(session):
        row = await db.insert_with_drawn_id(
            session, "executions", INSERT_HELD, _INSERT_EXECUTION, values
        )
        return built(Execution, row)
    new_id = await insert_if_absent(
        session, Execution, values, ["automation_rule_id", "occurrence_key"]
    )
    if new_id is None:
        return None
    # Built from what was written rather than read back: one statement fewer per execution.
    # It is not added to the session: its later changes are explicit UPDATEs.
    return built(Execution, {"id": new_id, **values})


async def get(session: AsyncSession, organization_id: int, execution_id: int) -> Execution | None:
    return await session.scalar(_scoped(organization_id).where(Execution.id == execution_id))


_executions: Table = Execution.__table__  # type: ignore[assignment]
_actions: Table = ExecutionAction.__table__  # type: ignore[assignment]
# Statements of the worker's hot path, built once; run with Core on the session's
# connection, they skip the ORM's compilation and loading (about 0.25 ms each here).
_SELECT_FOR_RUN = select(_executions).where(_executions.c.id == bindparam("execution_id"))
_SELECT_FOR_RUN_LOCKED = _SELECT_FOR_RUN.with_for_update()
_SELECT_MANY_FOR_RUN = (
    select(_executions)
    .where(_executions.c.id.in_(bindparam("execution_ids", expanding=True)))
    .order_by(_executions.c.id)
)
# PostgreSQL's take the ids as one array: one text, prepared once, for any batch (db.one_of).
_SELECT_MANY_FOR_RUN_LOCKED = (
    select(_executions)
    .where(one_of(_executions.c.id, "execution_ids", postgresql_array=True))
    .order_by(_executions.c.id)
    .with_for_update()
)


def _select_actions(postgresql_array: bool) -> Any:
    return (
        select(_actions)
        .where(one_of(_actions.c.execution_id, "execution_ids", postgresql_array=postgresql_array))
        .order_by(_actions.c.execution_id, _actions.c.action_index)
    )


_SELECT_ACTIONS = _select_actions(False)
_SELECT_ACTIONS_PG = _select_actions(True)
_INSERT_EXECUTION = insert(_executions)
INSERT_HELD = "executions.insert"
_INSERT_ACTION = insert(_actions).returning(_actions.c.id)
_INSERT_ACTION_HELD = insert(_actions)
_FINISH = (
    update(_executions)
    .where(_executions.c.id == bindparam("execution_id"), _executions.c.status == "running")
    .values(
        status=bindparam("status"),
        error_message=bindparam("error_message"),
        finished_at=bindparam("finished_at"),
    )
)
# Keyed like the unique index, not by id: a row inserted earlier in the transaction through
# a held write (``db.write``) has no id yet.
_UPDATE_ACTION = update(_actions).where(
    _actions.c.execution_id == bindparam("key_execution_id"),
    _actions.c.action_index == bindparam("key_action_index"),
)
_ACTION_FIELDS = (
    "type",
    "status",
    "result",
    "error",
    "attempts",
    "duration_ms",
    "scheduled_for",
    "finished_at",
)


async def get_for_run(session: AsyncSession, execution_id: int) -> Execution | None:
    """The worker's read: locked on PostgreSQL so two jobs of one execution take turns.

    The execution is built from the row and not added to the session, like the one
    ``insert_execution`` returns: its changes are explicit UPDATEs (``finish``).
    """
    stmt = _SELECT_FOR_RUN_LOCKED if _locking(session) else _SELECT_FOR_RUN
    connection = await session.connection()
    row = (await connection.execute(stmt, {"execution_id": execution_id})).first()
    return built(Execution, row._mapping) if row is not None else None


async def get_many_for_run(session: AsyncSession, execution_ids: Sequence[int]) -> list[Execution]:
    """``get_for_run`` of many executions in one read, locked in id order on PostgreSQL (two
    batches that share executions then take their locks in one order, and cannot deadlock)."""
    if not execution_ids:
        return []
    stmt = _SELECT_MANY_FOR_RUN_LOCKED if _locking(session) else _SELECT_MANY_FOR_RUN
    connection = await session.connection()
    rows = await connection.execute(stmt, {"execution_ids": sorted(set(execution_ids))})
    return [built(Execution, row._mapping) for row in rows]


async def list_page(
    session: AsyncSession,
    organization_id: int,
    filters: ExecutionFilters,
    *,
    offset: int,
    limit: int,
) -> tuple[Sequence[Execution], int]:
    """One page, newest first (``list_queries``), and how many executions match in all
    (``listcounts.total``: kept counts on PostgreSQL)."""
    count, page = list_queries(organization_id, filters, offset=offset, limit=limit)

    async def count_where(extra: Sequence[ColumnElement[bool]]) -> int:
        return int(await session.scalar(count.where(*extra)) or 0)

    keys = {
        "automation_rule_id": filters.automation_rule_id,
        "status": filters.status,
        "trigger_event": filters.trigger_event,
    }
    total = await listcounts.total(
        session,
        listcounts.EXECUTIONS,
        organization_id,
        keys,
        count_where=count_where,
        time_column=Execution.executed_at,
        lower=filters.executed_from,
        upper=filters.executed_before,
        # A patient's few executions are counted directly.
        others=filters.patient_id is not None,
    )
    rows = await session.scalars(page)
    return list(rows), total


def list_queries(
    organization_id: int, filters: ExecutionFilters, *, offset: int, limit: int
) -> tuple[Select[int], Select[Execution]]:
    """The count and the page of ``list_page``.

    The organisation and each filter's column lead an index that ends with the page's order
    (``executed_at``, ``id``; migration 0014): the page is the first entries of one index
    range read backwards, and the count reads that range from the index alone.
    """
    where = [Execution.organization_id == organization_id]
    if filters.automation_rule_id is not None:
        where.append(Execution.automation_rule_id == filters.automation_rule_id)
    if filters.status is not None:
        where.append(Execution.status == filters.status)
    if filters.trigger_event is not None:
        where.append(Execution.trigger_event == filters.trigger_event)
    if filters.executed_from is not None:
        where.append(Execution.executed_at >= filters.executed_from)
    if filters.executed_before is not None:
        where.append(Execution.executed_at < filters.executed_before)
    if filters.patient_id is not None:
        # Through the EntityId column type: "100" and 100 are the same patient.
        where.append(Execution.patient_id == filters.patient_id)
    count = select(func.count()).select_from(Execution).where(*where)
    page = (
        select(Execution)
        .where(*where)
        .order_by(Execution.executed_at.desc(), Execution.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return count, page


def _filtered(organization_id: int, filters: ExecutionFilters) -> Select[Execution]:
    """The executions ``filters`` selects, in no order (``list_queries``' conditions)."""
    _, page = list_queries(organization_id, filters, offset=0, limit=1)
    return page.order_by(None).offset(None).limit(None)


async def ids_with_status(
    session: AsyncSession,
    organization_id: int,
    filters: ExecutionFilters,
    statuses: Sequence[str],
    *,
    limit: int,
) -> list[int]:
    """Ids of the executions ``filters`` selects whose status is one of ``statuses``, oldest
    first, at most ``limit``."""
    query = (
        _filtered(organization_id, filters)
        .where(Execution.status.in_(statuses))
        .with_only_columns(Execution.id)
        .order_by(Execution.executed_at, Execution.id)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def for_patient(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, *, limit: int
) -> list[Execution]:
    """A patient's executions, oldest first, at most ``limit``."""
    rows = await session.scalars(
        _scoped(organization_id)
        .where(Execution.patient_id == patient_id)
        .order_by(Execution.executed_at, Execution.id)
        .limit(limit)
    )
    return list(rows)


async def actions_of(
    session: AsyncSession, execution_ids: Sequence[int]
) -> dict[int, list[ExecutionAction]]:
    """Action results by execution id, each list in action order.

    Built from the rows, not added to the session: ``save_action`` writes them explicitly.
    """
    out: dict[int, list[ExecutionAction]] = {i: [] for i in execution_ids}
    if not execution_ids:
        return out
    connection = await session.connection()
    stmt = _SELECT_ACTIONS_PG if _locking(session) else _SELECT_ACTIONS
    rows = await connection.execute(stmt, {"execution_ids": list(execution_ids)})
    for row in rows:
        out[row.execution_id].append(built(ExecutionAction, row._mapping))
    return out


async def save_action(
    session: AsyncSession, row: ExecutionAction, *, existing: ExecutionAction | None
) -> ExecutionAction:
    """Insert or update the result of (execution, index), given the row already stored for
    it (the caller has read it); the unique index keeps it single. Returns ``row``, not added
    to the session, with its id unless the session holds the INSERT back (nothing reads it)."""
    values = {name: getattr(row, name) for name in _ACTION_FIELDS}
    identity = ("execution_actions", row.execution_id, row.action_index)
    if existing is not None:
        keyed = {"key_execution_id": row.execution_id, "key_action_index": row.action_index}
        await db.write(
            session, "actions.update", _UPDATE_ACTION, {**keyed, **values}, row=identity
        )
        row.id = existing.id
        return row
    values["execution_id"] = row.execution_id
    values["action_index"] = row.action_index
    if db.defers_writes(session):
        await db.write(session, "actions.insert", _INSERT_ACTION_HELD, values, row=identity)
        return row
    connection = await session.connection()
    row.id = (await connection.execute(_INSERT_ACTION, values)).scalar_one()
    return row


async def delete_actions(session: AsyncSession, execution_id: int, indexes: Sequence[int]) -> None:
    if indexes:
        await session.execute(
            delete(ExecutionAction).where(
                ExecutionAction.execution_id == execution_id,
                ExecutionAction.action_index.in_(indexes),
            )
        )


async def finish(
    session: AsyncSession,
    execution: Execution,
    *,
    status: str,
    error_message: str | None,
    now: datetime,
) -> bool:
    """Mark a running execution finished; False if someone else already finished it.

    Where the session holds writes back (``db.defers_writes``) the UPDATE is held and True
    is assumed: the batch holds the execution's row lock (PostgreSQL) or the database's
    write lock (SQLite) from its prefetch on, so nobody else can have finished it meanwhile.
    """
    values = {
        "execution_id": execution.id,
        "status": status,
        "error_message": error_message,
        "finished_at": now,
    }
    if db.defers_writes(session):
        row = ("executions", execution.id)
        changes = {"status": status, "error_message": error_message, "finished_at": now}
        # Started in this batch and still held: the INSERT itself writes the outcome.
        if not db.amend(session, row, INSERT_HELD, changes):
            await db.write(session, "executions.finish", _FINISH, values, row=row)
    else:
        connection = await session.connection()
        if not (await connection.execute(_FINISH, values)).rowcount:
            return False
    # What the UPDATE wrote, without marking the object changed: no second UPDATE at flush.
    set_committed_value(execution, "status", status)
    set_committed_value(execution, "error_message", error_message)
    set_committed_value(execution, "finished_at", now)
    return True


async def reopen(session: AsyncSession, execution: Execution, from_statuses: Sequence[str]) -> bool:
    """Back to ``running`` for a retry; False when it is not in one of ``from_statuses``."""
    result = await session.execute(
        update(Execution)
        .where(Execution.id == execution.id, Execution.status.in_(from_statuses))
        .values(status="running", error_message=None, finished_at=None)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    execution.status = "running"
    execution.error_message = None
    execution.finished_at = None
    return True


async def merge_action_result(
    session: AsyncSession,
    execution_id: int,
    action_index: int,
    expected: dict[str, Any],
    fields: dict[str, Any],
) -> bool:
    """Add ``fields`` to the result of (execution, index) when its result holds ``expected``
    (the message a provider reports on is the one the action recorded). True if it did."""
    query = select(ExecutionAction).where(
        ExecutionAction.execution_id == execution_id, ExecutionAction.action_index == action_index
    )
    row = (await session.execute(query)).scalar_one_or_none()
    result = dict(row.result or {}) if row is not None else {}
    if row is None or any(result.get(k) != v for k, v in expected.items()):
        return False
    row.result = {**result, **fields}
    await session.flush()
    return True


async def count_by_status_since(
    session: AsyncSession, organization_id: int, since: datetime
) -> dict[str, int]:
    """The organisation's executions since ``since`` (inclusive), counted by status: one
    range of ``ix_executions_org_executed``."""
    rows = await session.execute(
        select(Execution.status, func.count())
        .where(Execution.organization_id == organization_id, Execution.executed_at >= since)
        .group_by(Execution.status)
    )
    return {status: int(count) for status, count in rows.all()}


async def newest_with_status_since(
    session: AsyncSession,
    organization_id: int,
    statuses: Sequence[str],
    since: datetime,
    *,
    limit: int,
) -> list[Execution]:
    """The organisation's newest executions with one of ``statuses`` since ``since``."""
    rows = await session.scalars(
        _scoped(organization_id)
        .where(Execution.executed_at >= since, Execution.status.in_(statuses))
        .order_by(Execution.executed_at.desc(), Execution.id.desc())
        .limit(limit)
    )
    return list(rows)
