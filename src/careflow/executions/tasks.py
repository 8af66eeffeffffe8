"""Job handler ``run_action``: thin, the runner does the work; the job runner commits."""

from __future__ import annotations

from typing import Any

from careflow.executions.runner import RunRequest, Runtime, run_action
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.errors import PermanentJobError
from careflow.jobs.registry import JobContext, job_handler


def _database_only(payload: dict[str, Any]) -> bool:
    """Actions that only write rows may share a transaction; unknown or older jobs do not."""
    from careflow.actions.registry import is_database_only

    return is_database_only(payload.get("type"))


@job_handler(RUN_ACTION_KIND, batchable=_database_only)
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
    )
