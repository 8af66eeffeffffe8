"""Job handlers of the providers' callbacks: thin, the service does the work."""

from __future__ import annotations

from typing import Any

from careflow.jobs.registry import JobContext, job_handler
from careflow.providers import service


@job_handler(service.HELD_STATUS_KIND)
async def apply_held_status(ctx: JobContext, payload: dict[str, Any]) -> None:
    await service.apply_held_status(ctx.session, payload, ctx.clock.now())
