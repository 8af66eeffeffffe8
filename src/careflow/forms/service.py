"""Forms: listing, reading, completing (which emits ``form.completed``), and the gate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.auth import Principal
from careflow.errors import ConflictError, not_found
from careflow.forms import repository as repo
from careflow.forms.models import Form, FormStatus
from careflow.kit.clock import isoformat_z
from careflow.kit.pagination import PageParams
from careflow.kit.types import EntityRef

FORM_COMPLETED = "form.completed"


async def list_forms(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    patient_id: EntityRef | None = None,
    status: str | None = None,
) -> tuple[list[Form], int]:
    return await repo.list_page(
        session,
        principal.org_id,
        patient_id=patient_id,
        status=status,
        offset=page.offset,
        limit=page.limit,
    )


async def get_form(session: AsyncSession, principal: Principal, form_id: int) -> Form:
    form = await repo.get(session, principal.org_id, form_id)
    if form is None:
        raise not_found("form")
    return form


async def complete_form(
    session: AsyncSession, principal: Principal, form_id: int, now: datetime
) -> Form:
    """Mark a pending form completed and audit it; ``events.service.complete_form`` then
    emits ``form.completed`` in the same transaction."""
    form = await get_form(session, principal, form_id)
    if not await repo.mark_completed(session, principal.org_id, form_id, now):
        raise ConflictError("Form is already completed", code="form_already_completed")
    await session.refresh(form)

    await audit.record(
        session,
        principal,
        action="complete",
        object_type="form",
        object_id=form.id,
        before={"status": FormStatus.PENDING, "completed_at": None},
        after={"status": form.status, "completed_at": isoformat_z(form.completed_at)},
        now=now,
    )

    return form


@dataclass(frozen=True, slots=True)
class Gate:
    patient_id: EntityRef
    blocked: bool
    pending_forms: list[Form]


async def patient_gate(session: AsyncSession, principal: Principal, patient_id: EntityRef) -> Gate:
    """Whether the patient may book: blocked while any blocking form is pending.

    A patient careflow has never heard of has no forms, so is simply not blocked.
    """
    pending = await repo.list_pending_for_patient(session, principal.org_id, patient_id)
    return Gate(
        patient_id=patient_id,
        blocked=any(form.blocking for form in pending),
        pending_forms=pending,
    )
