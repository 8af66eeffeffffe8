"""Job handlers of time-based triggers: thin, the service does the work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from careflow.jobs.registry import JobContext, Priority, Sharing, job_handler
from careflow.kit.time_triggers import RESCHEDULE_RULE_KIND
from careflow.scheduling import service


# A reminder fires at its time: it goes before an organisation's bulk work.
@job_handler(service.FIRE_KIND, sharing=Sharing.ROWS, priority=Priority.URGENT)
async def fire_time_trigger(ctx: JobContext, payload: dict[str, Any]) -> None:
    await service.fire(
        ctx.session,
        organization_id=int(payload["organization_id"]),
        rule_id=int(payload["rule_id"]),
        appointment_id=payload["appointment_id"],
        fire_at=datetime.fromisoformat(payload["fire_at"]),
        now=ctx.clock.now(),
    )


# Recomputing a rule's fires is bulk work: the fires it schedules are what is urgent.
@job_handler(RESCHEDULE_RULE_KIND, sharing=Sharing.ROWS, priority=Priority.BULK)
async def reschedule_rule(ctx: JobContext, payload: dict[str, Any]) -> None:
    await service.reschedule_rule(
        ctx.session, int(payload["organization_id"]), int(payload["rule_id"]), ctx.clock.now()
    )
