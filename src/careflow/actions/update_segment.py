"""``update_segment``: add the patient to a segment or remove them, idempotently."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome, PermanentActionError
from careflow.actions.common import required_int, required_str, skipped
from careflow.segments import repository as segments


class UpdateSegmentExecutor:
    type = "update_segment"
    database_only = True
    single_write = False

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        if ctx.patient_id is None:
            return skipped("no patient")
        segment_id = required_int(ctx.config, "segment_id")
        action = required_str(ctx.config, "action")
        org = ctx.organization_id
        if action == "add":
            changed = await segments.add_member(
                ctx.session, org, segment_id, ctx.patient_id, ctx.clock.now()
            )
            membership = "added" if changed else "unchanged"
        elif action == "remove":
            changed = await segments.remove_member(ctx.session, org, segment_id, ctx.patient_id)
            membership = "removed" if changed else "unchanged"
        else:
            raise PermanentActionError("action config field 'action' must be 'add' or 'remove'")
        return ActionOutcome(
            status="success", result={"segment_id": segment_id, "membership": membership}
        )

    async def preview(
        self,
        session: AsyncSession,
        organization_id: int,
        config: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        return {"segment_id": config.get("segment_id"), "action": config.get("action")}
