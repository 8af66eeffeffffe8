"""Run one action of one execution, record its result, and move the execution on.

Each run is one job and one transaction: the action's result row, its side effect's row
(form, message) and the next job commit together, so a crash anywhere reruns the whole
step and the executors' (execution, action index) keys make the rerun find, not repeat,
what an earlier attempt did.

Actions that only write careflow's rows and have no delay (``runs_inline``) do not wait
for a job of their own when the transaction that reaches them has sent nothing yet: the
dispatch that starts an execution runs its leading ones, and such a step runs the next.
They then commit with that transaction, under the same keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.actions.base import (
    ActionContext,
    ActionOutcome,
    PermanentActionError,
    ProviderThrottled,
    RetryableActionError,
)
from careflow.actions.registry import EXECUTORS, is_database_only
from careflow.config import Settings
from careflow.db import SentInSavepoint, built
from careflow.entities.catalog import ENTITY_TYPES
from careflow.entities.context import SnapshotReads, join_snapshots
from careflow.errors import error_origin
from careflow.executions import repository
from careflow.executions.models import Execution, ExecutionAction
from careflow.executions.prefetch import StepReads
from careflow.executions.service import (
    ExecutionStatus,
    action_dedupe_key,
    delay_of,
    enqueue_action,
    finish_execution,
)
from careflow.jobs.errors import DeferJob, RetryableJobError
from careflow.jobs.queue import default_max_attempts
from careflow.kit.clock import Clock, isoformat_z
from careflow.kit.metrics import ACTIONS
from careflow.kit.time_triggers import delivery_skip_reason
from careflow.ratelimits import service as ratelimits

log = structlog.get_logger("careflow.executions.runner")

FINAL_ACTION_STATUSES = frozenset({"success", "failure", "skipped"})
DEFERRED = "deferred"
# Held back by a rate limit (the organisation's, a provider's, or the provider's own answer):
# the step waits without counting an attempt, and never fails for it.
THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class RunRequest:
    execution_id: int
    action_index: int
    attempt: int
    max_attempts: int
    retry: str | None = None  # set when the run belongs to a retry of a finished execution
    inline: bool = False  # run in the transaction that reached it, not by a job of its own

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


async def fresh_context(
    session: AsyncSession, execution: Execution, *, read: SnapshotReads | None = None
) -> dict[str, Any]:
    """The execution's context with every entity re-read: an action may run days later.

    ``read`` holds the snapshots this transaction has already read (the dispatch that just
    started the execution), so they are not read twice.
    """
    stored = execution.context or {}
    entities = {k: v for k, v in stored.items() if k in ENTITY_TYPES}
    context = await join_snapshots(
        session, execution.organization_id, entities, prefer_snapshots=True, read=read
    )
    for key, value in stored.items():
        context.setdefault(key, value)
    return context


@dataclass(frozen=True, slots=True)
class Runtime:
    """What running an action needs beyond its session: the worker's settings and clients."""

    settings: Settings
    clock: Clock
    services: dict[str, Any]


async def run_action(
    session: AsyncSession,
    request: RunRequest,
    runtime: Runtime,
    *,
    reads: StepReads | None = None,
) -> None:
    """Run one step; ``reads``, when the step runs in a batch, holds what the batch read
    for it ahead (``prefetch.prefetch_steps``)."""
    taken = reads.take(request.execution_id) if reads is not None else None
    if taken is not None:
        execution, rows = taken
    else:
        # Not prefetched (a second step of one execution in a batch): read it now, with
        # what the batch has written so far.
        found = await repository.get_for_run(session, request.execution_id)
        if found is None:
            log.info("run_action_not_running", execution_id=request.execution_id)
            return
        execution = found
        rows = None
    if execution.status != ExecutionStatus.RUNNING:
        log.info("run_action_not_running", execution_id=request.execution_id)
        return
    actions = execution.actions or []
    index = request.action_index
    if not 0 <= index < len(actions):
        log.warning("run_action_bad_index", execution_id=execution.id, action_index=index)
        return
    # Read once: this step's own row, and what _continue needs to pick the next one.
    if rows is None:
        rows = (await repository.actions_of(session, [execution.id]))[execution.id]
    results = {row.action_index: row for row in rows}
    existing = results.get(index)
    if existing is not None and existing.status in FINAL_ACTION_STATUSES:
        # A redelivered job: the step committed with its continuation already.
        return
    snapshots = reads.snapshots_of(execution.organization_id) if reads is not None else None
    context = await fresh_context(session, execution, read=snapshots)
    await _step(session, execution, request, results, context, runtime, reads=reads)


def runs_inline(action: Mapping[str, Any]) -> bool:
    """An action the transaction that reaches it may run there and then: it only writes
    careflow's own rows and has no delay."""
    return is_database_only(action.get("type")) and not delay_of(action)


async def run_started(
    session: AsyncSession,
    execution: Execution,
    runtime: Runtime,
    *,
    read: SnapshotReads | None = None,
) -> bool:
    """Run a just-started execution's first action in the starting transaction, if it
    ``runs_inline``; False leaves it to the caller to enqueue.

    One job, one execution reload and one snapshot read fewer per execution: the dispatch
    that started it already holds all three. The step commits or rolls back with the
    dispatch, so a rerun of the dispatch finds the execution and starts nothing twice.
    """
    actions = execution.actions or []
    if not actions or not runs_inline(actions[0]):
        return False
    context = await fresh_context(session, execution, read=read)
    await _step_or_queue(session, execution, 0, {}, context, runtime, retry=None)
    return True


async def _step_or_queue(
    session: AsyncSession,
    execution: Execution,
    index: int,
    results: dict[int, ExecutionAction],
    context: dict[str, Any],
    runtime: Runtime,
    *,
    retry: str | None,
) -> None:
    """Run an inline step as a first attempt; one that wants a retry goes to the queue.

    A retry is not waited for here: the executor's writes were rolled back to its
    savepoint, and the action's job runs it again (after the delay the failure asked for,
    if any) as any queued action would be run. The inline try is not one of that job's
    attempts, so such an action gets one try more than ``max_attempts``.
    """
    request = RunRequest(
        execution_id=execution.id,
        action_index=index,
        attempt=1,
        max_attempts=default_max_attempts(),
        retry=retry,
        inline=True,
    )
    try:
        await _step(session, execution, request, results, context, runtime)
    except RetryableJobError as exc:
        log.info("inline_action_queued", execution_id=execution.id, action_index=index)
        now = runtime.clock.now()
        run_at = now + timedelta(seconds=exc.delay_seconds or 0)
        await enqueue_action(session, execution, index, run_at=run_at, now=now, retry=retry)


async def _step(
    session: AsyncSession,
    execution: Execution,
    request: RunRequest,
    results: dict[int, ExecutionAction],
    context: dict[str, Any],
    runtime: Runtime,
    *,
    reads: StepReads | None = None,
) -> None:
    """Run action ``request.action_index``, record its result, and move the execution on."""
    index = request.action_index
    existing = results.get(index)
    config = (execution.actions or [])[index]
    action_type = str(config.get("type"))
    ctx = ActionContext(
        session=session,
        settings=runtime.settings,
        clock=runtime.clock,
        services=runtime.services,
        organization_id=execution.organization_id,
        execution_id=execution.id,
        action_index=index,
        config=config,
        patient_id=execution.patient_id,
        context=context,
        attempt=request.attempt,
        is_last_attempt=request.is_last_attempt,
        trigger_event=execution.trigger_event,
        reads=reads,
    )
    held = reads.held_back(execution.id, index) if reads is not None else None
    if held is not None:
        wait = DeferJob(until=held.until, reason=held.reason)
        now = runtime.clock.now()
        await _defer(
            session, execution, index, action_type, wait, request, now, existing, THROTTLED
        )
        return
    # An action after a delayed one runs late as well: the delivery rules re-read for it too.
    after_delay = any(delay_of(action) for action in (execution.actions or [])[:index])
    started = time.perf_counter()
    try:
        outcome = await _execute(ctx, action_type, request, after_delay=after_delay)
    except DeferJob as defer:
        now = runtime.clock.now()
        status = DEFERRED
        if isinstance(defer, ProviderThrottled):
            status = THROTTLED
            await ratelimits.provider_refused(
                session, runtime.settings, now, defer.channel, defer.until
            )
        await _defer(session, execution, index, action_type, defer, request, now, existing, status)
        return
    duration_ms = int((time.perf_counter() - started) * 1000)
    now = runtime.clock.now()
    result = dict(outcome.result)
    if outcome.status == "skipped" and outcome.reason:
        result["reason"] = outcome.reason
    error = outcome.error if outcome.status == "failure" else None
    if outcome.status == "failure" and not error:
        error = "action failed"
    results[index] = await repository.save_action(
        session,
        built(
            ExecutionAction,
            {
                "execution_id": execution.id,
                "action_index": index,
                "type": action_type,
                "status": outcome.status,
                "result": result,
                "error": error,
                "attempts": request.attempt,
                "duration_ms": duration_ms,
                "scheduled_for": None,
                "finished_at": now,
            },
        ),
        existing=existing,
    )
    ACTIONS.labels(type=action_type, status=outcome.status).inc()
    fields: dict[str, Any] = {
        "execution_id": execution.id,
        "action_index": index,
        "action_type": action_type,
        "status": outcome.status,
        "attempt": request.attempt,
        "org_id": execution.organization_id,
    }
    if outcome.status == "failure":
        # The reason is the text the execution records: careflow's own words, a provider's
        # status or code, a template's error; never a recipient or a message body.
        log.warning("action_finished", reason=outcome.error, **fields)
    else:
        log.info("action_finished", **fields)
    await _continue(session, execution, request, now, results, context, runtime)


async def _execute(
    ctx: ActionContext, action_type: str, request: RunRequest, *, after_delay: bool = False
) -> ActionOutcome:
    """The executor's outcome; transient failures become a job retry until the last attempt."""
    executor = EXECUTORS.get(action_type)
    if executor is None:
        return ActionOutcome(status="failure", error=f"unknown action type {action_type!r}")
    reason = delivery_skip_reason(
        ctx.trigger_event, ctx.config, ctx.context, after_delay=after_delay
    )
    if reason is not None:
        return ActionOutcome(status="skipped", reason=reason)
    try:
        batched = db.defers_writes(ctx.session)
        if (
            executor.single_write
            and not request.is_last_attempt
            and (batched or not request.inline)
        ):
            # No savepoint needed: nothing is half-written (its one write is its last step),
            # and any exception rolls the job back. An inline step or a last attempt records
            # a failure after the exception, so a failed statement must not abort the rest,
            # except in a batch: there a failed statement fails the whole batch, which then
            # runs each job alone.
            return await executor.execute(ctx)
        # A savepoint: a failing executor's half-written rows go, the result row stays ours.
        return await _in_savepoint(ctx, executor)
    except (DeferJob, SentInSavepoint):
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
            origin=error_origin(exc),
        )
        if not request.is_last_attempt:
            raise RetryableJobError(f"{action_type} crashed: {type(exc).__name__}") from exc
        return ActionOutcome(status="failure", error=f"unexpected error ({type(exc).__name__})")


async def _in_savepoint(ctx: ActionContext, executor: Any) -> ActionOutcome:
    """``executor.execute`` in a savepoint. If it raises, the writes it left to the session's
    buffer go with its rows; if earlier jobs' writes were sent inside it, they were rolled
    back too, and only failing the whole batch keeps them (``SentInSavepoint``)."""
    async with db.savepoint(ctx.session):
        return await executor.execute(ctx)  # type: ignore[no-any-return]


async def _defer(
    session: AsyncSession,
    execution: Execution,
    index: int,
    action_type: str,
    defer: DeferJob,
    request: RunRequest,
    now: datetime,
    existing: ExecutionAction | None,
    status: str = DEFERRED,
) -> None:
    """Record the deferral (``deferred``, or ``throttled`` by a rate limit) and schedule the
    action again at ``defer.until``.

    Done here rather than by re-raising: the job runner rolls back a handler that raises,
    and the deferral must show on the execution while it waits.
    """
    until = defer.until
    until_key = "throttled_until" if status == THROTTLED else "deferred_until"
    await repository.save_action(
        session,
        built(
            ExecutionAction,
            {
                "execution_id": execution.id,
                "action_index": index,
                "type": action_type,
                "status": status,
                "result": {until_key: isoformat_z(until), "reason": defer.reason},
                "error": None,
                "attempts": request.attempt,
                "duration_ms": None,
                "scheduled_for": until,
                "finished_at": None,
            },
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
        dedupe_key=f"{action_dedupe_key(execution.id, index)}:{status}:{until.isoformat()}",
    )
    log.info(
        "action_throttled" if status == THROTTLED else "action_deferred",
        execution_id=execution.id,
        action_index=index,
        until=isoformat_z(until),
        org_id=execution.organization_id,
    )


async def _continue(
    session: AsyncSession,
    execution: Execution,
    request: RunRequest,
    now: datetime,
    results: dict[int, ExecutionAction],
    context: dict[str, Any],
    runtime: Runtime,
) -> None:
    """Move on to the next action still to run, or finish the execution.

    The next action runs in this transaction when this step and it both ``run_inline``
    (no email or call is then waiting on the commit); otherwise it is enqueued.
    """
    actions: Sequence[Mapping[str, Any]] = execution.actions or []
    index = request.action_index
    done = {i for i, row in results.items() if row.status in FINAL_ACTION_STATUSES}
    following = [i for i in range(index + 1, len(actions)) if i not in done]
    if not following:
        if len(done) >= len(actions):
            rows = [results[i] for i in sorted(results)]
            await finish_execution(session, execution, now=now, rows=rows)
        return
    nxt = following[0]
    if runs_inline(actions[index]) and runs_inline(actions[nxt]):
        await _step_or_queue(
            session, execution, nxt, results, context, runtime, retry=request.retry
        )
        return
    # A retry runs the failed actions now: their delays counted from the original trigger.
    run_at = now if request.retry else now + delay_of(actions[nxt])
    await enqueue_action(session, execution, nxt, run_at=run_at, now=now, retry=request.retry)
