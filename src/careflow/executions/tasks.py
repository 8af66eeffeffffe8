"""Job handler ``run_action``: thin, the runner does the work; the job runner commits."""

from __future__ import annotations

from typing import Any

from careflow.actions.registry import is_database_only
from careflow.executions.prefetch import MESSAGE_CHANNELS, prefetch_steps
from careflow.executions.runner import RunRequest, Runtime, run_action
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.errors import PermanentJobError
from careflow.jobs.registry import JobContext, Priority, Sharing, job_handler


def _sharing(payload: dict[str, Any]) -> Sharing:
    """Steps that only write rows share plainly; message steps share with failures kept
    apart (``Sharing.EFFECTS``); unknown or older jobs (no type recorded) run alone."""
    action_type = payload.get("type")
    if is_database_only(action_type):
        return Sharing.ROWS
    if action_type in MESSAGE_CHANNELS:
        return Sharing.EFFECTS
    return Sharing.ALONE


def _priority(payload: dict[str, Any]) -> Priority:
    """A form the patient must fill in opens ahead of an organisation's other steps."""
    return Priority.URGENT if payload.get("type") == "require_form" else Priority.NORMAL


@job_handler(RUN_ACTION_KIND, sharing=_sharing, prefetch=prefetch_steps, priority=_priority)
async def handle_run_action(ctx: JobContext, payload: dict[str, Any]) -> None:
    try:
        execution_id = int(payload["execution_id"])
        action_index = int(payload["action_index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"malformed run_action payload: {exc}") from exc
    retry = payload.get("retry")
    await run_action(
        ctx.session,
        RunRequest(
            execution_id=execution_id,
            action_index=action_index,
            attempt=ctx.attempt,
            max_attempts=ctx.max_attempts,
            retry=str(retry) if retry else None,
        ),
        Runtime(settings=ctx.settings, clock=ctx.clock, services=ctx.services),
        reads=ctx.prefetched,
    )
