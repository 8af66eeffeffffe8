"""Form instances. Every query starts from the organisation, so tenancy cannot be forgotten."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import prebuilt
from careflow.forms.models import Form, FormStatus
from careflow.kit.types import EntityRef

_forms: Table = Form.__table__  # type: ignore[assignment]


def _in_org(organization_id: int) -> Select[Form]:
    return select(Form).where(Form.organization_id == organization_id)


async def get(session: AsyncSession, organization_id: int, form_id: int) -> Form | None:
    result = await session.execute(_in_org(organization_id).where(Form.id == form_id))
    return result.scalar_one_or_none()


async def get_for_action(
    session: AsyncSession, organization_id: int, execution_id: int, action_index: int
) -> Form | None:
    result = await session.execute(
        _in_org(organization_id).where(
            Form.execution_id == execution_id, Form.action_index == action_index
        )
    )
    return result.scalar_one_or_none()


async def insert_pending(
    session: AsyncSession,
    *,
    organization_id: int,
    patient_id: EntityRef,
    form_template_id: int,
    blocking: bool,
    description: str | None,
    execution_id: int,
    action_index: int,
    now: datetime,
) -> int | None:
    """Open a pending form for an action; None (nothing written) if the action already
    has its form or the patient already has this template pending: both are unique."""
    stmt = prebuilt(
        session,
        "forms.insert_pending",
        lambda insert: insert(_forms).on_conflict_do_nothing().returning(_forms.c.id),
    )
    values = {
        "organization_id": organization_id,
        "patient_id": patient_id,
        "form_template_id": form_template_id,
        "blocking": blocking,
        "description": description,
        "status": FormStatus.PENDING,
        "execution_id": execution_id,
        "action_index": action_index,
        "created_at": now,
    }
    connection = await session.connection()
    return (await connection.execute(stmt, values)).scalar_one_or_none()  # type: ignore[no-any-return]


async def get_pending(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, form_template_id: int
) -> Form | None:
    result = await session.execute(
        _in_org(organization_id).where(
            Form.patient_id == patient_id,
            Form.form_template_id == form_template_id,
            Form.status == FormStatus.PENDING,
        )
    )
    return result.scalar_one_or_none()


async def list_pending_for_patient(
    session: AsyncSession, organization_id: int, patient_id: EntityRef
) -> list[Form]:
    result = await session.execute(
        _in_org(organization_id)
        .where(Form.patient_id == patient_id, Form.status == FormStatus.PENDING)
        .order_by(Form.created_at, Form.id)
    )
    return list(result.scalars())


async def list_page(
    session: AsyncSession,
    organization_id: int,
    *,
    patient_id: EntityRef | None,
    status: str | None,
    offset: int,
    limit: int,
) -> tuple[list[Form], int]:
    query = _in_org(organization_id)
    if patient_id is not None:
        query = query.where(Form.patient_id == patient_id)
    if status is not None:
        query = query.where(Form.status == status)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(
        query.order_by(Form.created_at.desc(), Form.id.desc()).offset(offset).limit(limit)
    )
    return list(rows.scalars()), int(total or 0)


async def mark_completed(
    session: AsyncSession, organization_id: int, form_id: int, now: datetime
) -> bool:
    """Complete a pending form; False when it was not pending.

    A conditional UPDATE rather than read-then-write: two concurrent completions cannot
    both succeed, so ``form.completed`` is emitted once.
    """
    result = await session.execute(
        update(Form)
        .where(
            Form.organization_id == organization_id,
            Form.id == form_id,
            Form.status == FormStatus.PENDING,
        )
        .values(status=FormStatus.COMPLETED, completed_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
