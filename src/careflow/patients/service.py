"""Opt-outs careflow records itself: asking whether a patient opted out, recording one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.kit.types import EntityRef
from careflow.patients import repository

EMAIL = "email"
UNSUBSCRIBE_LINK = "unsubscribe_link"


async def has_opted_out(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, channel: str
) -> bool:
    return await repository.is_opted_out(session, organization_id, patient_id, channel)


async def opted_out_among(
    session: AsyncSession, channel: str, patients: Sequence[tuple[int, EntityRef]]
) -> set[tuple[int, EntityRef]]:
    """Which ``(organisation, patient)`` pairs opted out of ``channel`` (a batch's read)."""
    return await repository.opted_out_among(session, channel, patients)


async def record_opt_out(
    session: AsyncSession,
    organization_id: int,
    patient_id: EntityRef,
    *,
    channel: str,
    source: str,
    now: datetime,
) -> bool:
    """Record that the patient wants nothing more on ``channel``; False if already recorded.

    The audit entry names the patient by id and the channel: no address, no name.
    """
    row_id = await repository.insert_opt_out(
        session, organization_id, patient_id, channel, source, now
    )
    if row_id is None:
        return False
    await audit.record_by_system(
        session,
        organization_id=organization_id,
        action="update",
        object_type="patient_preferences",
        object_id=patient_id,
        before={"channel": channel, "opted_out": False},
        after={"channel": channel, "opted_out": True, "source": source},
        now=now,
    )
    return True
