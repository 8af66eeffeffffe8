"""One execution as a timeline, for ``/console/executions/{id}``: the event received, each
condition of the rule matched or failed, and each action with its status, attempts, time
waiting apart from time running, error, and what it produced.

Read from the domains' services, in the caller's organisation. What is not stored is not
made up: an action's start is its ``finished_at`` less its ``duration_ms`` (the run of its
last attempt); the moment it became due is the end of the step before it (or the
execution's start) plus its delay, so the waiting time of a retried action includes the
time until the retry was asked for. A finished action's job is deleted with it, so the
job's ``run_at`` is shown only while the job is still queued, running or dead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.automations import service as automations
from careflow.conditions import ConditionError
from careflow.errors import NotFoundError
from careflow.events import service as events
from careflow.events.models import Event
from careflow.executions import explain
from careflow.executions import service as executions
from careflow.executions.models import Execution, ExecutionAction
from careflow.forms import service as forms
from careflow.forms.models import Form
from careflow.jobs import service as jobs
from careflow.jobs.models import Job
from careflow.kit.pagination import PageParams
from careflow.messages import service as messages
from careflow.messages.models import Message
from careflow.messages.repository import MessageFilters

# The result keys that name what an action produced, and what they are.
PRODUCED = {"form_id": "form", "email_id": "message", "sms_id": "message"}


@dataclass
class Step:
    """One configured action of the execution, run or not yet."""

    index: int
    type: str
    config: Mapping[str, Any]
    row: ExecutionAction | None
    status: str  # the row's, else "queued" (a job waits for it) or "not run"
    attempts: int
    due_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    waiting: timedelta | None = None
    running: timedelta | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    forms: list[Form] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


@dataclass
class Timeline:
    execution: Execution
    event: Event | None
    checks: list[explain.Check] | None
    conditions_note: str | None
    steps: list[Step]
    retryable: bool


async def _event(session: AsyncSession, principal: Principal, pk: int | None) -> Event | None:
    if pk is None:
        return None
    found = await events.events_by_pk(session, principal, [pk])
    return found[0] if found else None


async def _checks(
    session: AsyncSession, principal: Principal, execution: Execution
) -> tuple[list[explain.Check] | None, str | None]:
    if execution.automation_rule_id is None:
        return None, "The rule was deleted; its conditions are no longer stored."
    try:
        rule = await automations.get_rule(session, principal, execution.automation_rule_id)
    except NotFoundError:
        return None, "The rule was deleted; its conditions are no longer stored."
    note = None
    if rule.version != execution.rule_version:
        note = (
            f"The rule is at version {rule.version} now; the conditions of version "
            f"{execution.rule_version}, which this execution ran, are not stored. "
            "Shown: the current conditions against this execution's context."
        )
    try:
        return explain.explain(rule.conditions, execution.context or {}), note
    except ConditionError as exc:
        return None, f"The rule's conditions cannot be evaluated: {exc}"


def _delay(config: Mapping[str, Any]) -> timedelta:
    return executions.delay_of(config)


def _steps(
    execution: Execution,
    rows: Sequence[ExecutionAction],
    pending: Sequence[Job],
    now: datetime,
) -> list[Step]:
    by_index = {row.action_index: row for row in rows}
    jobs_by_index: dict[int, list[Job]] = {}
    for job in pending:
        index = (job.payload or {}).get("action_index")
        if isinstance(index, int):
            jobs_by_index.setdefault(index, []).append(job)
    steps: list[Step] = []
    previous_end: datetime | None = execution.executed_at
    for index, config in enumerate(execution.actions or []):
        row = by_index.get(index)
        waiting_jobs = jobs_by_index.get(index, [])
        status = row.status if row is not None else ("queued" if waiting_jobs else "not run")
        step = Step(
            index=index,
            type=str(config.get("type")),
            config=config,
            row=row,
            status=status,
            attempts=row.attempts if row is not None else 0,
            jobs=waiting_jobs,
        )
        if previous_end is not None:
            step.due_at = previous_end + _delay(config)
        if row is not None:
            step.error = row.error
            step.result = dict(row.result or {})
            step.finished_at = row.finished_at
            if row.finished_at is not None and row.duration_ms is not None:
                step.running = timedelta(milliseconds=row.duration_ms)
                step.started_at = row.finished_at - step.running
                if step.due_at is not None:
                    step.waiting = max(step.started_at - step.due_at, timedelta(0))
        elif waiting_jobs and step.due_at is not None:
            # Still waiting: how long so far.
            step.waiting = max(now - step.due_at, timedelta(0))
            step.attempts = max(job.attempts for job in waiting_jobs)
        # A later step's due time counts from this one's end, unknown until it ends.
        previous_end = row.finished_at if row is not None else None
        steps.append(step)
    return steps


async def execution_timeline(
    session: AsyncSession, principal: Principal, execution_id: int, *, now: datetime
) -> Timeline:
    """The timeline of one of the caller's organisation's executions (404 otherwise)."""
    execution, rows = await executions.get_execution(session, principal, execution_id)
    event = await _event(session, principal, execution.event_pk)
    checks, note = await _checks(session, principal, execution)
    pending = await jobs.jobs_with_key_prefix(
        session, principal, executions.RUN_ACTION_KIND, f"action:{execution.id}:"
    )
    steps = _steps(execution, rows, pending, now)
    sent, _ = await messages.list_messages(
        session,
        principal,
        MessageFilters(execution_id=execution.id),
        PageParams(page=1, limit=100),
    )
    by_step = {step.index: step for step in steps}
    for message in sent:
        if message.action_index is not None and message.action_index in by_step:
            by_step[message.action_index].messages.append(message)
    for step in steps:
        form_id = step.result.get("form_id")
        if isinstance(form_id, int):
            try:
                step.forms.append(await forms.get_form(session, principal, form_id))
            except NotFoundError:
                continue
    retryable = execution.status in executions.ExecutionStatus.RETRYABLE and any(
        row.status == "failure" for row in rows
    )
    return Timeline(
        execution=execution,
        event=event,
        checks=checks,
        conditions_note=note,
        steps=steps,
        retryable=retryable,
    )
