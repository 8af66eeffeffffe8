"""Opt-outs careflow records itself, and a patient's preferences as they apply.

Three records decide whether a patient gets a channel:

- the host's snapshot flag (``email_opt_out``, ``sms_opt_out``): source ``host``;
- careflow's own opt-out of the patient (``patient_opt_outs``): an unsubscribe link
  (``unsubscribe_link``) or an admin (``admin``);
- for SMS, careflow's opt-out of the patient's phone (``sms_opt_outs``): the phone texted
  STOP (``sms_stop``), until it texts START.

Precedence: an opt-out anywhere wins. careflow never sends on a channel any of them opts
out of; a host snapshot without the flag (or with it false) never undoes careflow's records,
and careflow's records never undo the host's flag, which only the host changes. The
``source`` shown is careflow's record when there is one (the latest, for SMS), else ``host``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.auth import Principal
from careflow.config import Settings
from careflow.entities import repository as entities
from careflow.kit.phones import to_e164
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.organizations.service import effective_settings
from careflow.patients import repository

EMAIL = "email"
SMS = "sms"
CHANNELS = (EMAIL, SMS)
HOST = "host"
UNSUBSCRIBE_LINK = "unsubscribe_link"
SMS_STOP = "sms_stop"
ADMIN = "admin"
SOURCES = (HOST, SMS_STOP, UNSUBSCRIBE_LINK, ADMIN)
_HOST_FLAGS = {EMAIL: "email_opt_out", SMS: "sms_opt_out"}
PREFERENCES = "patient_preferences"


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


async def phones_opted_out_among(
    session: AsyncSession, organization_id: int, phones: Sequence[str]
) -> set[str]:
    """Which of ``phones`` (E.164) texted STOP to the organisation (a batch's read)."""
    return await repository.phones_opted_out_among(session, organization_id, phones)


async def patients_with_phone(
    session: AsyncSession, organization_id: int, phone: str, region: str
) -> list[EntityRef]:
    """The organisation's patients whose phone is ``phone`` (E.164) once read in ``region``,
    the most recently updated first."""
    found = [
        (updated_at, patient_id)
        for patient_id, raw, updated_at in await entities.patient_phones(session, organization_id)
        if to_e164(raw, region) == phone
    ]
    found.sort(key=lambda item: (item[0], str(item[1])), reverse=True)
    return [patient_id for _, patient_id in found]


async def _audit_sms_phone(
    session: AsyncSession,
    organization_id: int,
    patients: Sequence[EntityRef],
    row_id: int,
    opted_out: bool,
    now: datetime,
) -> None:
    # Ids only: the patients the phone belongs to, else the opt-out's own row; never the phone.
    targets: list[tuple[str, Any]] = [(PREFERENCES, p) for p in patients] or [
        ("sms_opt_out", row_id)
    ]
    for object_type, object_id in targets:
        await audit.record_by_system(
            session,
            organization_id=organization_id,
            action="update",
            object_type=object_type,
            object_id=object_id,
            before={"channel": SMS, "opted_out": not opted_out},
            after={"channel": SMS, "opted_out": opted_out, "source": SMS_STOP},
            now=now,
        )


async def record_sms_stop(
    session: AsyncSession,
    organization_id: int,
    phone: str,
    patients: Sequence[EntityRef],
    now: datetime,
) -> bool:
    """The phone (E.164) texted STOP: no SMS to it from this organisation until START.
    False when it had already. ``patients`` (those with the phone) name the audit entries."""
    row_id = await repository.insert_sms_opt_out(session, organization_id, phone, SMS_STOP, now)
    if row_id is None:
        return False
    await _audit_sms_phone(session, organization_id, patients, row_id, True, now)
    return True


async def record_sms_start(
    session: AsyncSession,
    organization_id: int,
    phone: str,
    patients: Sequence[EntityRef],
    now: datetime,
) -> bool:
    """The phone texted START: its STOP no longer applies. False when it had none."""
    row_id = await repository.delete_sms_opt_out(session, organization_id, phone)
    if row_id is None:
        return False
    await _audit_sms_phone(session, organization_id, patients, row_id, False, now)
    return True


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    opted_out: bool
    source: str  # one of SOURCES: who decided what applies
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Preferences:
    patient_id: EntityRef
    email: ChannelPreference
    sms: ChannelPreference


@dataclass(frozen=True, slots=True)
class _Records:
    """What decides a patient's channels: the snapshot and careflow's own rows."""

    snapshot: dict[str, Any]  # empty when the host sent none yet
    snapshot_at: datetime | None
    phone: str | None  # the snapshot's phone in E.164, when it parses
    own: dict[str, tuple[str, datetime] | None]  # channel -> careflow's (source, when)


async def _records(
    session: AsyncSession, settings: Settings, organization_id: int, patient_id: EntityRef
) -> _Records:
    entity = await entities.get_entity(session, organization_id, "patient", patient_id)
    data = dict(entity.data) if entity is not None else {}
    raw_phone = data.get("phone")
    phone = None
    if isinstance(raw_phone, str) and raw_phone.strip():
        region = (await effective_settings(session, settings, organization_id)).default_region
        phone = to_e164(raw_phone, region)
    own: dict[str, tuple[str, datetime] | None] = {}
    for channel in CHANNELS:
        row = await repository.get_opt_out(session, organization_id, patient_id, channel)
        own[channel] = (row.source, row.created_at) if row is not None else None
    if phone is not None:
        stop = await repository.get_sms_opt_out(session, organization_id, phone)
        patient_sms = own[SMS]
        if stop is not None and (patient_sms is None or stop.created_at > patient_sms[1]):
            own[SMS] = (stop.source, stop.created_at)
    return _Records(data, entity.updated_at if entity is not None else None, phone, own)


def _preference(records: _Records, channel: str) -> ChannelPreference:
    own = records.own[channel]
    if own is not None:
        return ChannelPreference(True, own[0], own[1])
    host = records.snapshot.get(_HOST_FLAGS[channel]) is True
    return ChannelPreference(host, HOST, records.snapshot_at)


def _preferences(patient_id: EntityRef, records: _Records) -> Preferences:
    return Preferences(patient_id, _preference(records, EMAIL), _preference(records, SMS))


async def get_preferences(
    session: AsyncSession, principal: Principal, settings: Settings, patient_id: EntityRef
) -> Preferences:
    """What applies to the patient on each channel. A patient the host has sent no snapshot
    of yet has no host flags: only careflow's own records (an admin may record an opt-out
    before the host's first snapshot arrives)."""
    key = canonical_entity_id(patient_id)
    return _preferences(key, await _records(session, settings, principal.org_id, key))


async def put_preferences(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    patient_id: EntityRef,
    wanted: dict[str, bool],
    *,
    now: datetime,
) -> Preferences:
    """Set careflow's own opt-outs of the patient (``wanted``: channel -> opted out).

    Opting out records an ``admin`` opt-out (one already recorded stays as it is). Opting
    back in removes careflow's records of the channel: for SMS, the patient's phone's STOP
    too. The host's flag is the host's: while it is set the channel stays opted out. Each
    change is an audit entry naming the patient by id.
    """
    org = principal.org_id
    key = canonical_entity_id(patient_id)
    records = await _records(session, settings, org, key)
    before = _preferences(key, records)
    for channel, opted_out in wanted.items():
        previous = before.email if channel == EMAIL else before.sms
        if opted_out:
            changed = (
                await repository.insert_opt_out(session, org, key, channel, ADMIN, now) is not None
            )
        else:
            removed = await repository.delete_opt_out(session, org, key, channel)
            stopped = None
            if channel == SMS and records.phone is not None:
                stopped = await repository.delete_sms_opt_out(session, org, records.phone)
            changed = removed is not None or stopped is not None
        if changed:
            await audit.record(
                session,
                principal,
                action="update",
                object_type=PREFERENCES,
                object_id=key,
                before={
                    "channel": channel,
                    "opted_out": previous.opted_out,
                    "source": previous.source,
                },
                after={"channel": channel, "opted_out": opted_out, "source": ADMIN},
                now=now,
            )
    return _preferences(key, await _records(session, settings, org, key))
