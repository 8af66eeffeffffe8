"""``require_form``: open a pending form instance for the patient (at most one per template)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome, RetryableActionError
from careflow.actions.common import patient_of, required_int, skipped
from careflow.forms import repository as forms
from careflow.forms.models import Form, FormStatus
from careflow.kit.types import canonical_entity_id


class RequireFormExecutor:
    type = "require_form"
    database_only = True

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        if ctx.patient_id is None:
            return skipped("no patient")
        template_id = required_int(ctx.config, "form_template_id")
        blocking = bool(ctx.config.get("blocking", False))
        description = ctx.config.get("description")
        org = ctx.organization_id

        # A rerun of this very action (a crash after the insert) finds its own form.
        mine = await forms.get_for_action(ctx.session, org, ctx.execution_id, ctx.action_index)
        if mine is not None:
            return ActionOutcome(status="success", result={"form_id": mine.id})
        pending = await forms.get_pending(ctx.session, org, ctx.patient_id, template_id)
        if pending is not None:
            return ActionOutcome(status="success", result={"form_id": pending.id, "reused": True})

        form = Form(
            organization_id=org,
            patient_id=ctx.patient_id,
            form_template_id=template_id,
            blocking=blocking,
            description=description if isinstance(description, str) else None,
            status=FormStatus.PENDING,
            execution_id=ctx.execution_id,
            action_index=ctx.action_index,
            created_at=ctx.clock.now(),
        )
        try:
            async with ctx.session.begin_nested():
                ctx.session.add(form)
        except IntegrityError:
            # Another execution opened the same template for this patient between our read
            # and our insert: the partial unique index refused the second pending one.
            pending = await forms.get_pending(ctx.session, org, ctx.patient_id, template_id)
            if pending is not None:
                return ActionOutcome(
                    status="success", result={"form_id": pending.id, "reused": True}
                )
            mine = await forms.get_for_action(ctx.session, org, ctx.execution_id, ctx.action_index)
            if mine is not None:
                return ActionOutcome(status="success", result={"form_id": mine.id})
            # The conflicting row vanished again (completed or rolled back): try once more.
            raise RetryableActionError("form instance conflict, retrying") from None
        return ActionOutcome(status="success", result={"form_id": form.id})

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
