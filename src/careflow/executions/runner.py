"""Run one action of one execution, record its result, and move the execution on.

Each run is one job and one transaction: the action's result row, its side effect's row
(form, message) and the next job commit together, so a crash anywhere reruns the whole
step and the executors' (execution, action index) keys make the rerun find, not repeat,
what an earlier attempt did.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import (
    ActionContext,
    ActionOutcome,
    PermanentActionError,
    RetryableActionError,
)
from careflow.config import Settings
from careflow.events.catalog import ENTITY_TYPES
from careflow.events.context import join_snapshots
from careflow.executions import repository
from careflow.executions.models import Execution, ExecutionAction
from careflow.executions.service import (
    ExecutionStatus,
    action_dedupe_key,
    delay_of,
    enqueue_action,
    finish_execution,
)
from careflow.jobs.errors import DeferJob, RetryableJobError
from careflow.kit.clock import Clock, isoformat_z
from careflow.ops.metrics import ACTIONS
from careflow.scheduling.service import delivery_skip_reason

log = structlog.get_logger("careflow.executions.runner")

FINAL_ACTION_STATUSES = frozenset({"success", "failure", "skipped"})
DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class RunRequest:
    execution_id: int
    action_index: int
    attempt: int
    max_attempts: int
    retry: str | None = None  # set when the run belongs to a retry of a finished execution

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


async def fresh_context(session: AsyncSession, execution: Execution) -> dict[str, Any]:
    """The execution's context with every entity re-read: an action may run days later."""
    stored = execution.context or {}
    entities = {k: v for k, v in stored.items() if k in ENTITY_TYPES}
    context = await join_snapshots(
        session, execution.organization_id, entities, prefer_snapshots=True
    )
    for key, value in stored.items():
        context.setdefault(key, value)
    return context


async def run_action(
    session: AsyncSession,
    request: RunRequest,
    *,
    settings: Settings,
    clock: Clock,
    services: dict[str, Any],
) -> None:
    execution = await repository.get_for_run(session, request.execution_id)
    if execution is None or execution.status != ExecutionStatus.RUNNING:
        log.info("run_action_not_running", execution_id=request.execution_id)
        return
    actions = execution.actions or []
    index = request.action_index
    if not 0 <= index < len(actions):
        log.warning("run_action_bad_index", execution_id=execution.id, action_index=index)
        return
    # Read once: this step's own row, and what _continue needs to pick the next one.
    results = {
        row.action_index: row
        for row in (await repository.actions_of(session, [execution.id]))[execution.id]
    }
    existing = results.get(index)
    if existing is not None and existing.status in FINAL_ACTION_STATUSES:
        # A redelivered job: the step committed with its continuation already.
        return

    config = actions[index]
    action_type = str(config.get("type"))
    ctx = ActionContext(
        session=session,
        settings=settings,
        clock=clock,
        services=services,
        organization_id=execution.organization_id,
        execution_id=execution.id,
        action_index=index,
        config=config,
        patient_id=execution.patient_id,
        context=await fresh_context(session, execution),
        attempt=request.attempt,
        is_last_attempt=request.is_last_attempt,
        trigger_event=execution.trigger_event,
    )
    started = time.perf_counter()
    try:
        outcome = await _execute(ctx, action_type, request)
    except DeferJob as defer:
        await _defer(session, execution, index, action_type, defer, request, clock.now(), existing)
        return
    duration_ms = int((time.perf_counter() - started) * 1000)
    now = clock.now()
    result = dict(outcome.result)
    if outcome.status == "skipped" and outcome.reason:
        result["reason"] = outcome.reason
    error = outcome.error if outcome.status == "failure" else None
    if outcome.status == "failure" and not error:
        error = "action failed"
    results[index] = await repository.save_action(
        session,
        ExecutionAction(
            execution_id=execution.id,
            action_index=index,
            type=action_type,
            status=outcome.status,
            result=result,
            error=error,
            attempts=request.attempt,
            duration_ms=duration_ms,
            scheduled_for=None,
            finished_at=now,
        ),
        existing=existing,
    )
    ACTIONS.labels(type=action_type, status=outcome.status).inc()
    log.info(
        "action_finished",
        execution_id=execution.id,
        action_index=index,
        action_type=action_type,
        status=outcome.status,
        attempt=request.attempt,
        org_id=execution.organization_id,
    )
    ordered = [results[i] for i in sorted(results)]
    await _continue(session, execution, index, request, now, ordered)


async def _execute(ctx: ActionContext, action_type: str, request: RunRequest) -> ActionOutcome:
    """The executor's outcome; transient failures become a job retry until the last attempt."""
    from careflow.actions.registry import EXECUTORS

    executor = EXECUTORS.get(action_type)
    if executor is None:
        return ActionOutcome(status="failure", error=f"unknown action type {action_type!r}")
    reason = delivery_skip_reason(ctx.trigger_event, ctx.config, ctx.context)
    if reason is not None:
        return ActionOutcome(status="skipped", reason=reason)
    try:
        # A savepoint: a failing executor's half-written rows go, the result row stays ours.
        async with ctx.session.begin_nested():
            return await executor.execute(ctx)
    except DeferJob:
        raise
    except RetryableActionError as exc:
        if not request.is_last_attempt:
            raise RetryableJobError(str(exc), delay_seconds=exc.delay_seconds) from exc
        return ActionOutcome(status="failure", error=str(exc))
    except PermanentActionError as exc:
        return ActionOutcome(status="failure", error=str(exc))
    except Exception as exc:
        # An executor bug or a lost connection: retry like a transient failure. The
        # exception text may quote patient data, so only its type and origin are logged.
        log.error(
            "action_crashed",
            execution_id=ctx.execution_id,
            action_index=ctx.action_index,
            error_type=type(exc).__name__,
            origin=_origin(exc),
        )
        if not request.is_last_attempt:
            raise RetryableJobError(f"{action_type} crashed: {type(exc).__name__}") from exc
        return ActionOutcome(status="failure", error=f"unexpected error ({type(exc).__name__})")


def _origin(exc: BaseException) -> str | None:
    """Where an exception was raised (file:line in function): no values, so no patient data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


async def _defer(
    session: AsyncSession,
    execution: Execution,
    index: int,
    action_type: str,
    defer: DeferJob,
    request: RunRequest,
    now: datetime,
    existing: ExecutionAction | None,
) -> None:
    """Record the deferral and schedule the action again at ``defer.until``.

    Done here rather than by re-raising: the job runner rolls back a handler that raises,
    and the deferral must show on the execution while it waits.
    """
    until = defer.until
    await repository.save_action(
        session,
        ExecutionAction(
            execution_id=execution.id,
            action_index=index,
            type=action_type,
            status=DEFERRED,
            result={"deferred_until": isoformat_z(until), "reason": defer.reason},
            error=None,
            attempts=request.attempt,
            duration_ms=None,
            scheduled_for=until,
            finished_at=None,
        ),
        existing=existing,
    )
    await enqueue_action(
        session,
        execution,
        index,
        run_at=until,
        now=now,
        retry=request.retry,
        dedupe_key=f"{action_dedupe_key(execution.id, index)}:deferred:{until.isoformat()}",
    )
    log.info(
        "action_deferred",
        execution_id=execution.id,
        action_index=index,
        until=isoformat_z(until),
        org_id=execution.organization_id,
    )


async def _continue(
    session: AsyncSession,
    execution: Execution,
    index: int,
    request: RunRequest,
    now: datetime,
    results: list[ExecutionAction],
) -> None:
    """Enqueue the next action still to run, or finish the execution."""
    actions: Sequence[Mapping[str, Any]] = execution.actions or []
    done = {row.action_index for row in results if row.status in FINAL_ACTION_STATUSES}
    following = [i for i in range(index + 1, len(actions)) if i not in done]
    if not following:
        if len(done) >= len(actions):
            await finish_execution(session, execution, now=now, rows=results)
        return
    nxt = following[0]
    # A retry runs the failed actions now: their delays counted from the original trigger.
    run_at = now if request.retry else now + delay_of(actions[nxt])
    await enqueue_action(session, execution, nxt, run_at=run_at, now=now, retry=request.retry)
