"""SQL of careflow's own opt-outs; every query starts from the organisation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import insert_if_absent
from careflow.kit.types import EntityRef
from careflow.patients.models import PatientOptOut, SmsOptOut


async def is_opted_out(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, channel: str
) -> bool:
    found = await session.scalar(
        select(PatientOptOut.id).where(
            PatientOptOut.organization_id == organization_id,
            PatientOptOut.patient_id == patient_id,
            PatientOptOut.channel == channel,
        )
    )
    return found is not None


async def opted_out_among(
    session: AsyncSession, channel: str, patients: Sequence[tuple[int, EntityRef]]
) -> set[tuple[int, EntityRef]]:
    """Which of ``(organisation, patient)`` have opted out of ``channel``: one statement."""
    if not patients:
        return set()
    rows = await session.execute(
        select(PatientOptOut.organization_id, PatientOptOut.patient_id).where(
            PatientOptOut.channel == channel,
            tuple_(PatientOptOut.organization_id, PatientOptOut.patient_id).in_(
                sorted(set(patients), key=str)
            ),
        )
    )
    return {(org, patient) for org, patient in rows.tuples()}


async def insert_opt_out(
    session: AsyncSession,
    organization_id: int,
    patient_id: EntityRef,
    channel: str,
    source: str,
    now: datetime,
) -> int | None:
    """The new row's id, or None when the patient had already opted out of the channel."""
    return await insert_if_absent(
        session,
        PatientOptOut,
        {
            "organization_id": organization_id,
            "patient_id": patient_id,
            "channel": channel,
            "source": source,
            "created_at": now,
        },
        ["organization_id", "patient_id", "channel"],
    )


async def get_opt_out(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, channel: str
) -> PatientOptOut | None:
    return await session.scalar(
        select(PatientOptOut).where(
            PatientOptOut.organization_id == organization_id,
            PatientOptOut.patient_id == patient_id,
            PatientOptOut.channel == channel,
        )
    )


async def delete_opt_out(
    session: AsyncSession, organization_id: int, patient_id: EntityRef, channel: str
) -> int | None:
    """The deleted row's id, or None when the patient had no opt-out of the channel."""
    return await session.scalar(  # type: ignore[no-any-return]
        delete(PatientOptOut)
        .where(
            PatientOptOut.organization_id == organization_id,
            PatientOptOut.patient_id == patient_id,
            PatientOptOut.channel == channel,
        )
        .returning(PatientOptOut.id)
    )


async def get_sms_opt_out(
    session: AsyncSession, organization_id: int, phone: str
) -> SmsOptOut | None:
    return await session.scalar(
        select(SmsOptOut).where(
            SmsOptOut.organization_id == organization_id, SmsOptOut.phone == phone
        )
    )


async def phones_opted_out_among(
    session: AsyncSession, organization_id: int, phones: Sequence[str]
) -> set[str]:
    """Which of ``phones`` (E.164) texted STOP to the organisation: one statement."""
    if not phones:
        return set()
    rows = await session.scalars(
        select(SmsOptOut.phone).where(
            SmsOptOut.organization_id == organization_id,
            SmsOptOut.phone.in_(sorted(set(phones))),
        )
    )
    return set(rows)


async def insert_sms_opt_out(
    session: AsyncSession, organization_id: int, phone: str, source: str, now: datetime
) -> int | None:
    """The new row's id, or None when the phone had already opted out."""
    return await insert_if_absent(
        session,
        SmsOptOut,
        {"organization_id": organization_id, "phone": phone, "source": source, "created_at": now},
        ["organization_id", "phone"],
    )


async def delete_sms_opt_out(session: AsyncSession, organization_id: int, phone: str) -> int | None:
    """The deleted row's id, or None when the phone had not opted out."""
    return await session.scalar(  # type: ignore[no-any-return]
        delete(SmsOptOut)
        .where(SmsOptOut.organization_id == organization_id, SmsOptOut.phone == phone)
        .returning(SmsOptOut.id)
    )
