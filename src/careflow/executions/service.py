"""Executions: start one per (rule, occurrence), read them back, retry failed actions."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.conditions import ConditionError
from careflow.conditions.cache import compiled_conditions
from careflow.errors import ConflictError, ValidationError, not_found
from careflow.executions import repository
from careflow.executions.models import Execution, ExecutionAction
from careflow.executions.repository import ExecutionFilters
from careflow.jobs.queue import enqueue
from careflow.kit.metrics import EXECUTIONS
from careflow.kit.pagination import PageParams
from careflow.kit.types import EntityRef

log = structlog.get_logger("careflow.executions")

RUN_ACTION_KIND = "run_action"


class ExecutionStatus:
    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL_FAILURE = "partial_failure"
    FAILURE = "failure"
    SKIPPED = "skipped"

    ALL = (RUNNING, SUCCESS, PARTIAL_FAILURE, FAILURE, SKIPPED)
    RETRYABLE = (PARTIAL_FAILURE, FAILURE)


def delay_of(action: Mapping[str, Any]) -> timedelta:
    minutes = action.get("delay_minutes") or 0
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
        minutes = 0
    return timedelta(minutes=minutes)


def action_dedupe_key(execution_id: int, action_index: int, retry: str | None = None) -> str:
    base = f"action:{execution_id}:{action_index}"
    return f"{base}:{retry}" if retry else base


async def enqueue_action(
    session: AsyncSession,
    execution: Execution,
    action_index: int,
    *,
    run_at: datetime,
    now: datetime,
    retry: str | None = None,
    dedupe_key: str | None = None,
) -> None:
    payload: dict[str, Any] = {
        "execution_id": execution.id,
        "action_index": action_index,
        # Read by the worker before the job runs: may it share a transaction?
        "type": str((execution.actions or [])[action_index].get("type")),
    }
    if retry:
        payload["retry"] = retry
    await enqueue(
        session,
        RUN_ACTION_KIND,
        payload,
        run_at=run_at,
        now=now,
        organization_id=execution.organization_id,
        dedupe_key=dedupe_key or action_dedupe_key(execution.id, action_index, retry),
    )


class RuleToRun(Protocol):
    """What starting an execution reads of a rule: a stored automation rule or the
    dispatcher's snapshot of one (``automations.enabled.RuleSnapshot``)."""

    @property
    def id(self) -> int: ...

    @property
    def organization_id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def conditions(self) -> Any: ...

    @property
    def actions(self) -> Any: ...


async def start_execution(
    session: AsyncSession,
    *,
    rule: RuleToRun,
    trigger_event: str,
    occurrence_key: str,
    trigger_entity_type: str,
    trigger_entity_id: EntityRef,
    patient_id: EntityRef | None,
    context: dict[str, Any],
    event_pk: int | None,
    now: datetime,
    skip_reason: str | None = None,
    run_first: Callable[[Execution], Awaitable[bool]] | None = None,
    hold: bool = False,
) -> Execution | None:
    """Evaluate the rule's conditions and record the execution; None if it already exists.

    The unique (rule, occurrence_key) index decides: a redelivered event or a second fire
    of the same occurrence finds the first execution and starts nothing. A matching rule's
    first action is enqueued (after its delay) in the same transaction, unless
    ``run_first`` ran it there and then (it returns False when it did not). ``hold``: the
    caller knows no execution of the occurrence exists yet (``repository.insert_execution``).
    """
    error: str | None = None
    if skip_reason is not None:
        # Recorded, not run: a reminder whose appointment was cancelled or moved.
        matched, error = False, None
    else:
        try:
            matched = compiled_conditions(rule)(context)
        except ConditionError as exc:
            # Validated on save, so only a row written around the API gets here.
            matched, error = False, f"rule conditions are invalid: {exc}"
    status = ExecutionStatus.RUNNING if matched else ExecutionStatus.SKIPPED
    if error is not None:
        status = ExecutionStatus.FAILURE
    actions = list(rule.actions or [])
    execution = await repository.insert_execution(
        session,
        {
            "organization_id": rule.organization_id,
            "automation_rule_id": rule.id,
            "automation_rule_name": rule.name,
            "rule_version": rule.version,
            "trigger_event": trigger_event,
            "trigger_entity_type": trigger_entity_type,
            "trigger_entity_id": trigger_entity_id,
            "patient_id": patient_id,
            "occurrence_key": occurrence_key,
            "event_pk": event_pk,
            "status": status,
            "actions": actions,
            "context": context,
            "error_message": error or skip_reason,
            "executed_at": now,
            "finished_at": None if status == ExecutionStatus.RUNNING else now,
        },
        hold=hold,
    )
    if execution is None:
        return None
    log.info(
        "execution_started",
        execution_id=execution.id,
        rule_id=rule.id,
        trigger=trigger_event,
        status=status,
        org_id=rule.organization_id,
    )
    if status != ExecutionStatus.RUNNING:
        EXECUTIONS.labels(status=status).inc()
        return execution
    # No counter is written here: a rule's execution_count and last_executed_at are read
    # from its executions (ix_executions_rule_ran), so concurrent dispatches of one rule
    # never queue on a shared row.
    if not actions:
        await finish_execution(session, execution, now=now)
        return execution
    if run_first is not None and await run_first(execution):
        return execution
    await enqueue_action(session, execution, 0, run_at=now + delay_of(actions[0]), now=now)
    return execution


def summarise(rows: list[ExecutionAction]) -> tuple[str, str | None]:
    """The final status and error message of an execution from its action results."""
    failed = [r for r in rows if r.status == "failure"]
    if not failed:
        return ExecutionStatus.SUCCESS, None
    status = (
        ExecutionStatus.FAILURE if len(failed) == len(rows) else ExecutionStatus.PARTIAL_FAILURE
    )
    message = "; ".join(f"{r.type} failed: {r.error or 'unknown error'}" for r in failed)
    return status, message


async def finish_execution(
    session: AsyncSession,
    execution: Execution,
    *,
    now: datetime,
    rows: list[ExecutionAction] | None = None,
) -> None:
    """Close the execution with the status its action results add up to (read here unless
    the caller already holds them)."""
    if rows is None:
        rows = (await repository.actions_of(session, [execution.id]))[execution.id]
    status, message = summarise(rows)
    if await repository.finish(session, execution, status=status, error_message=message, now=now):
        EXECUTIONS.labels(status=status).inc()
        if message is None:
            log.info(
                "execution_finished",
                execution_id=execution.id,
                status=status,
                org_id=execution.organization_id,
            )
        else:
            log.warning(
                "execution_finished",
                execution_id=execution.id,
                status=status,
                reason=message,
                org_id=execution.organization_id,
            )


def _parse_bound(value: str | None, field: str, *, end: bool) -> datetime | None:
    """A date (the whole day, UTC) or an ISO 8601 date-time; ``end`` makes it exclusive."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            details=[{"field": field, "message": "must be an ISO 8601 date or date-time"}]
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # An inclusive date-time upper bound: anything up to and including that instant.
    return moment + timedelta(microseconds=1) if end else moment


def build_filters(
    *,
    automation_rule_id: int | None,
    status: str | None,
    trigger_event: str | None,
    from_date: str | None,
    to_date: str | None,
    patient_id: EntityRef | None = None,
) -> ExecutionFilters:
    start = _parse_bound(from_date, "from_date", end=False)
    before = _parse_bound(to_date, "to_date", end=True)
    if start is not None and before is not None and start >= before:
        raise ValidationError(
            details=[{"field": "to_date", "message": "must not be before from_date"}]
        )
    return ExecutionFilters(
        automation_rule_id=automation_rule_id,
        status=status,
        trigger_event=trigger_event,
        executed_from=start,
        executed_before=before,
        patient_id=patient_id,
    )


async def list_executions(
    session: AsyncSession, principal: Principal, filters: ExecutionFilters, page: PageParams
) -> tuple[list[tuple[Execution, list[ExecutionAction]]], int]:
    rows, total = await repository.list_page(
        session, principal.org_id, filters, offset=page.offset, limit=page.limit
    )
    actions = await repository.actions_of(session, [r.id for r in rows])
    return [(r, actions[r.id]) for r in rows], total


async def get_execution(
    session: AsyncSession, principal: Principal, execution_id: int
) -> tuple[Execution, list[ExecutionAction]]:
    execution = await repository.get(session, principal.org_id, execution_id)
    if execution is None:
        raise not_found("execution")
    actions = await repository.actions_of(session, [execution.id])
    return execution, actions[execution.id]


async def retry_execution(
    session: AsyncSession, principal: Principal, execution_id: int, *, now: datetime
) -> tuple[Execution, list[ExecutionAction]]:
    """Run the failed actions of a finished execution again, in order and without delays.

    Their results are cleared so the runner treats them as still to come; actions that
    succeeded or were skipped keep their results and do not run again.
    """
    execution = await repository.get(session, principal.org_id, execution_id)
    if execution is None:
        raise not_found("execution")
    rows = (await repository.actions_of(session, [execution.id]))[execution.id]
    failed = [r.action_index for r in rows if r.status == "failure"]
    if execution.status not in ExecutionStatus.RETRYABLE or not failed:
        raise _not_retryable(execution.status)
    # Conditional on the status, so two concurrent retries cannot both start.
    if not await repository.reopen(session, execution, ExecutionStatus.RETRYABLE):
        raise _not_retryable(execution.status)
    await repository.delete_actions(session, execution.id, failed)
    # A fresh tag per retry keeps its jobs apart from any earlier run's.
    tag = "retry-" + secrets.token_hex(4)
    await enqueue_action(session, execution, min(failed), run_at=now, now=now, retry=tag)
    log.info(
        "execution_retried",
        execution_id=execution.id,
        actions=failed,
        org_id=execution.organization_id,
    )
    remaining = [r for r in rows if r.action_index not in failed]
    return execution, remaining


async def retryable_ids(
    session: AsyncSession, principal: Principal, filters: ExecutionFilters, *, limit: int
) -> list[int]:
    """The ids of the failed executions ``filters`` selects (``failure`` or
    ``partial_failure``), oldest first, at most ``limit``: what a bulk retry would run."""
    return await repository.ids_with_status(
        session, principal.org_id, filters, ExecutionStatus.RETRYABLE, limit=limit
    )


async def executions_of_patient(
    session: AsyncSession, principal: Principal, patient_id: EntityRef, *, limit: int
) -> list[Execution]:
    """A patient's executions in the caller's organisation, oldest first."""
    return await repository.for_patient(session, principal.org_id, patient_id, limit=limit)


def _not_retryable(status: str) -> ConflictError:
    return ConflictError(
        f"Only a finished execution with failed actions can be retried (status: {status})",
        code="execution_not_retryable",
    )


async def record_delivery_status(
    session: AsyncSession, execution_id: int, action_index: int, *, sms_id: str, status: str
) -> None:
    """Show an SMS's current delivery status on the action that sent it. Not org-scoped:
    the caller holds the message, which names its execution."""
    await repository.merge_action_result(
        session, execution_id, action_index, {"sms_id": sms_id}, {"delivery_status": status}
    )


async def count_by_status_since(
    session: AsyncSession, principal: Principal, since: datetime
) -> dict[str, int]:
    """How many of the organisation's executions ran since ``since``, by status (every
    status present, 0 when none)."""
    found = await repository.count_by_status_since(session, principal.org_id, since)
    return {status: found.get(status, 0) for status in ExecutionStatus.ALL}


async def failed_since(
    session: AsyncSession, principal: Principal, since: datetime, *, limit: int
) -> list[Execution]:
    """The organisation's newest executions since ``since`` that ended with failed actions
    (``failure``, ``partial_failure``): the ones a retry can help."""
    return await repository.newest_with_status_since(
        session, principal.org_id, ExecutionStatus.RETRYABLE, since, limit=limit
    )
