"""Form instances. Every query starts from the organisation, so tenancy cannot be forgotten."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.db import one_of, prebuilt
from careflow.forms.models import Form, FormStatus
from careflow.kit.types import EntityRef

_forms: Table = Form.__table__  # type: ignore[assignment]
_PENDING_KEY = "careflow.forms.pending"
_SELECT_PENDING_OF = select(_forms.c.id, _forms.c.patient_id, _forms.c.form_template_id).where(
    _forms.c.organization_id == bindparam("organization_id"),
    # Run on PostgreSQL only (read_pending): the ids as one array (db.one_of).
    one_of(_forms.c.patient_id, "patient_ids", postgresql_array=True),
    _forms.c.status == FormStatus.PENDING,
)
_INSERT_HELD = insert(_forms)


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


@dataclass(slots=True)
class PendingForms:
    """The pending forms of the patients a batch read ahead, kept current as it opens forms."""

    patients: set[tuple[int, EntityRef]] = field(default_factory=set)  # (org, patient) read
    forms: dict[tuple[int, EntityRef, int], int] = field(default_factory=dict)  # -> form id


async def read_pending(session: AsyncSession, patients: Iterable[tuple[int, EntityRef]]) -> None:
    """Read the pending forms of ``patients`` (organisation, patient), one statement per
    organisation, for ``open_pending`` to decide in memory within this batch. Only where the
    session draws ids ahead (``db.draws_ids``): elsewhere each form is one INSERT anyway."""
    if not db.draws_ids(session):
        return
    by_org: dict[int, set[EntityRef]] = {}
    for organization_id, patient_id in patients:
        by_org.setdefault(organization_id, set()).add(patient_id)
    if not by_org:
        return
    pending: PendingForms = session.info.setdefault(_PENDING_KEY, PendingForms())
    connection = await session.connection()
    for organization_id, patient_ids in by_org.items():
        rows = await connection.execute(
            _SELECT_PENDING_OF,
            {"organization_id": organization_id, "patient_ids": sorted(patient_ids, key=str)},
        )
        for row in rows:
            pending.forms[(organization_id, row.patient_id, row.form_template_id)] = row.id
        pending.patients.update((organization_id, p) for p in patient_ids)


async def open_pending(
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
) -> tuple[int, bool] | None:
    """The action's pending form: (its id, whether it is one the patient already had
    pending), or None when the INSERT was refused and the caller must look (a rerun of the
    action, or a form pending since the read).

    In a batch that read the patient's pending forms ahead (``read_pending``), for an
    execution the batch itself started (so the action has no form yet), the answer comes
    from memory and the INSERT is held with an id drawn ahead. Should another transaction
    open the same form meanwhile, the unique index refuses the INSERT at the batch's end:
    the batch fails and each job runs again alone, down the INSERT below.
    """
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
    pending: PendingForms | None = session.info.get(_PENDING_KEY)
    covered = pending is not None and (organization_id, patient_id) in pending.patients
    # An execution the batch itself started (its id drawn here) has no form from before.
    fresh = db.is_drawn(session, "executions", execution_id)
    if pending is not None and covered and fresh:
        key = (organization_id, patient_id, form_template_id)
        existing = pending.forms.get(key)
        if existing is not None:
            return existing, True
        # Rank 2: a form points at its execution, itself held with rank 1.
        row = await db.insert_with_drawn_id(
            session, "forms", "forms.insert", _INSERT_HELD, values, rank=2
        )
        form_id = int(row["id"])
        pending.forms[key] = form_id
        return form_id, False
    # What the batch holds goes first by itself where this INSERT needs it: the execution's
    # row (the form's foreign key), or a form held for this patient (the unique index).
    inserted = await _insert_pending(session, values)
    if covered and pending is not None:
        # The map no longer knows this patient's forms for sure (this INSERT, or a form
        # it found): the rest of the batch takes this path for the patient too.
        pending.patients.discard((organization_id, patient_id))
    return (inserted, False) if inserted is not None else None


async def _insert_pending(session: AsyncSession, values: dict[str, Any]) -> int | None:
    """Open a pending form for an action; None (nothing written) if the action already
    has its form or the patient already has this template pending: both are unique."""
    stmt = prebuilt(
        session,
        "forms.insert_pending",
        lambda insert: insert(_forms).on_conflict_do_nothing().returning(_forms.c.id),
    )
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
