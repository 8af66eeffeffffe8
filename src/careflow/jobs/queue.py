"""Transactional enqueue: a job is a row written in the caller's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from careflow.db import dialect_of, prebuilt
from careflow.jobs import held_writes
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.registry import Priority, priority_of
from careflow.kit.context import Origin, current_origin

NOTIFY_CHANNEL = "careflow_jobs"
_NOTIFY = text(f"NOTIFY {NOTIFY_CHANNEL}")
_jobs: Table = Job.__table__  # type: ignore[assignment]
DEFAULT_MAX_ATTEMPTS = 5
# Attempts a job gets when its enqueuer names none: CAREFLOW_JOB_MAX_ATTEMPTS, installed by
# the process at start (create_app, the worker process) through set_default_max_attempts.
_default_max_attempts = DEFAULT_MAX_ATTEMPTS


def set_default_max_attempts(attempts: int) -> None:
    global _default_max_attempts
    if attempts < 1:
        raise ValueError("a job needs at least one attempt")
    _default_max_attempts = attempts


def default_max_attempts() -> int:
    return _default_max_attempts


# Process-local wake-ups for the in-process runner (SQLite, tests): called after a commit
# that enqueued work. PostgreSQL workers are woken by NOTIFY, which is itself transactional.
_wake_callbacks: list[Any] = []


def add_wake_callback(callback: Any) -> None:
    _wake_callbacks.append(callback)


def remove_wake_callback(callback: Any) -> None:
    if callback in _wake_callbacks:
        _wake_callbacks.remove(callback)


# SQLAlchemy fires after_commit and after_rollback for a savepoint too, while its
# transaction goes on (in_nested_transaction() is then still true): only the outermost
# commit has made the jobs visible, and only the outermost rollback has dropped them all.


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop("careflow_notified", None)
    if session.info.pop("careflow_jobs_enqueued", False):
        for callback in list(_wake_callbacks):
            callback()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # A NOTIFY sent inside a rolled-back savepoint is gone with it: send the next one again.
    session.info.pop("careflow_notified", None)
    if not session.in_nested_transaction():
        session.info.pop("careflow_jobs_enqueued", None)


def _row(
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime,
    now: datetime,
    organization_id: int | None,
    dedupe_key: str | None,
    max_attempts: int | None,
    ref: str | None,
    origin: Origin,
    priority: Priority | None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "payload": payload,
        "organization_id": organization_id,
        "status": JobStatus.QUEUED,
        "run_at": run_at,
        "attempts": 0,
        "max_attempts": max_attempts or _default_max_attempts,
        "dedupe_key": dedupe_key,
        "ref": ref,
        # One of the levels the claim walks (``Priority(…)`` refuses any other number).
        "priority": int(Priority(priority) if priority is not None else priority_of(kind, payload)),
        "request_id": origin.request_id,
        "traceparent": origin.traceparent,
        "created_at": now,
        "updated_at": now,
    }


async def _insert(session: AsyncSession, rows: list[dict[str, Any]], *, due_now: bool) -> None:
    dialect = dialect_of(session)
    # A NULL dedupe_key never conflicts, so every job goes through the same statement:
    # compiled once (Core, not the ORM), whatever the number of rows.
    stmt = prebuilt(
        session,
        "jobs.insert",
        lambda insert: insert(_jobs).on_conflict_do_nothing(index_elements=["dedupe_key"]),
    )
    session.info["careflow_jobs_enqueued"] = True
    held = held_writes.held_by(session)
    if held is not None:
        # A batch's jobs go in with its other held writes; so does its one NOTIFY, which a
        # job that fails takes back with the rest of what it held.
        for row in rows:
            await held.add(session, "jobs.insert", stmt, row, None)
        if dialect == "postgresql" and due_now:
            await held.add(session, "jobs.notify", _NOTIFY, {}, ("jobs.notify",), once=True)
        return
    connection = await session.connection()
    await connection.execute(stmt, rows)
    if dialect == "postgresql" and due_now and not session.info.get("careflow_notified"):
        # NOTIFY is delivered on commit only, so a rolled-back enqueue wakes nobody.
        await connection.execute(_NOTIFY)
        session.info["careflow_notified"] = True


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime,
    now: datetime,
    organization_id: int | None = None,
    dedupe_key: str | None = None,
    max_attempts: int | None = None,
    ref: str | None = None,
    priority: Priority | None = None,
) -> None:
    """Add a job to the session's transaction; with ``dedupe_key`` a second one is a no-op.

    The job carries the current request id and span (``kit.context.current_origin``), and
    ``priority``, by default its kind's (``job_handler(kind, priority=…)``).
    """
    row = _row(
        kind,
        payload,
        run_at=run_at,
        now=now,
        organization_id=organization_id,
        dedupe_key=dedupe_key,
        max_attempts=max_attempts,
        ref=ref,
        origin=current_origin(),
        priority=priority,
    )
    await _insert(session, [row], due_now=run_at <= now)


async def enqueue_many(
    session: AsyncSession,
    kind: str,
    jobs: list[tuple[dict[str, Any], int | None, str | None]],
    *,
    run_at: datetime,
    now: datetime,
    origins: Sequence[Origin] | None = None,
    priority: Priority | None = None,
) -> None:
    """Many jobs of one kind in one statement: ``(payload, organization_id, dedupe_key)``.

    ``origins``, one per job, when the jobs come from different requests (group commit);
    by default every job carries the current one.
    """
    if not jobs:
        return
    if origins is None:
        origins = [current_origin()] * len(jobs)
    rows = [
        _row(
            kind,
            payload,
            run_at=run_at,
            now=now,
            organization_id=organization_id,
            dedupe_key=dedupe_key,
            max_attempts=None,
            ref=None,
            origin=origin,
            priority=priority,
        )
        for (payload, organization_id, dedupe_key), origin in zip(jobs, origins, strict=True)
    ]
    await _insert(session, rows, due_now=run_at <= now)
