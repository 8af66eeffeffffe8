"""``require_form``: open a pending form instance for the patient (at most one per template)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome, RetryableActionError
from careflow.actions.common import patient_of, required_int, skipped
from careflow.forms import repository as forms
from careflow.kit.types import canonical_entity_id


class RequireFormExecutor:
    type = "require_form"
    database_only = True
    single_write = True  # the form's INSERT, which its unique indexes may refuse

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        if ctx.patient_id is None:
            return skipped("no patient")
        template_id = required_int(ctx.config, "form_template_id")
        blocking = bool(ctx.config.get("blocking", False))
        description = ctx.config.get("description")
        org = ctx.organization_id

        # One statement in the common case, or none in a batch: the insert, which the two
        # unique indexes refuse (doing nothing) when this action already opened its form (a
        # rerun) or the patient already has this template pending.
        opened = await forms.open_pending(
            ctx.session,
            organization_id=org,
            patient_id=ctx.patient_id,
            form_template_id=template_id,
            blocking=blocking,
            description=description if isinstance(description, str) else None,
            execution_id=ctx.execution_id,
            action_index=ctx.action_index,
            now=ctx.clock.now(),
        )
        if opened is not None:
            form_id, reused = opened
            result: dict[str, Any] = {"form_id": form_id}
            if reused:
                result["reused"] = True
            return ActionOutcome(status="success", result=result)
        mine = await forms.get_for_action(ctx.session, org, ctx.execution_id, ctx.action_index)
        if mine is not None:
            return ActionOutcome(status="success", result={"form_id": mine.id})
        pending = await forms.get_pending(ctx.session, org, ctx.patient_id, template_id)
        if pending is not None:
            return ActionOutcome(status="success", result={"form_id": pending.id, "reused": True})
        # The conflicting row vanished again (completed or rolled back): try once more.
        raise RetryableActionError("form instance conflict, retrying")

    async def preview(
        self,
        session: AsyncSession,
        organization_id: int,
        config: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        template_id = config.get("form_template_id")
        would_create = True
        patient = patient_of(context)
        patient_id = patient.get("id") if patient is not None else None
        if patient_id is None:
            would_create = False
        elif isinstance(template_id, int):
            existing = await forms.get_pending(
                session, organization_id, canonical_entity_id(patient_id), template_id
            )
            would_create = existing is None
        return {
            "form_template_id": template_id,
            "blocking": config.get("blocking"),
            "would_create_form": would_create,
        }
