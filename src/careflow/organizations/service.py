"""An organisation's own settings: SMS quiet hours and hourly cap, over the service defaults."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record
from careflow.auth import Principal
from careflow.config import Settings
from careflow.kit.models import OrganizationSettings

FIELDS = ("quiet_hours_start", "quiet_hours_end", "sms_hourly_limit")


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    quiet_hours_start: int
    quiet_hours_end: int
    sms_hourly_limit: int
    overrides: dict[str, int | None]
    updated_at: datetime | None


def _effective(settings: Settings, row: OrganizationSettings | None) -> EffectiveSettings:
    overrides = {f: getattr(row, f) if row is not None else None for f in FIELDS}
    return EffectiveSettings(
        quiet_hours_start=_pick(overrides["quiet_hours_start"], settings.quiet_hours_start),
        quiet_hours_end=_pick(overrides["quiet_hours_end"], settings.quiet_hours_end),
        sms_hourly_limit=_pick(overrides["sms_hourly_limit"], settings.sms_hourly_limit),
        overrides=overrides,
        updated_at=row.updated_at if row is not None else None,
    )


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override


async def get_settings(
    session: AsyncSession, principal: Principal, settings: Settings
) -> EffectiveSettings:
    return _effective(settings, await session.get(OrganizationSettings, principal.org_id))


async def put_settings(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    values: dict[str, int | None],
    *,
    now: datetime,
) -> EffectiveSettings:
    """Replace the organisation's overrides; ``null`` returns a field to the service default."""
    row = await session.get(OrganizationSettings, principal.org_id)
    before = {f: getattr(row, f) for f in FIELDS} if row is not None else dict.fromkeys(FIELDS)
    if row is None:
        row = OrganizationSettings(organization_id=principal.org_id, updated_at=now)
        session.add(row)
    for field in FIELDS:
        setattr(row, field, values.get(field))
    row.updated_at = now
    await session.flush()
    old, new = changed_fields(before, {f: getattr(row, f) for f in FIELDS})
    if new:
        await record(
            session,
            principal,
            action="update",
            object_type="organization_settings",
            object_id=principal.org_id,
            before=old,
            after=new,
            now=now,
        )
    return _effective(settings, row)
