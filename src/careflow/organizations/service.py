"""An organisation's own settings: SMS quiet hours, hourly cap and the region phone numbers
without a country code are read in, over the service defaults; the numbers it receives
texts on (``sms_numbers``), which have no default; and its rate limit
(``actions_per_second``, applied by ``ratelimits/``), which is none unless set.

``effective_settings`` is the one place the defaults and the organisation's stored values
are merged: the API shows what it returns and ``send_sms`` applies it, so what an admin
reads is what a send does. A stored value applies when it lies in the range the API
accepts (``models.FIRST_HOUR`` to ``LAST_HOUR``, 0 to ``MAX_SMS_HOURLY_LIMIT``); one outside
it (written to the table by hand) falls back to the default rather than stopping all SMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record
from careflow.auth import Principal
from careflow.config import Settings
from careflow.errors import ConflictError
from careflow.kit.phones import is_region
from careflow.organizations import repository
from careflow.organizations.models import (
    FIRST_HOUR,
    LAST_HOUR,
    MAX_ACTIONS_PER_SECOND,
    MAX_SMS_HOURLY_LIMIT,
    MIN_ACTIONS_PER_SECOND,
    OrganizationSettings,
)

FIELDS = (
    "quiet_hours_start",
    "quiet_hours_end",
    "sms_hourly_limit",
    "default_region",
    "actions_per_second",
)
_RANGES = {
    "quiet_hours_start": (FIRST_HOUR, LAST_HOUR),
    "quiet_hours_end": (FIRST_HOUR, LAST_HOUR),
    "sms_hourly_limit": (0, MAX_SMS_HOURLY_LIMIT),
}
Value = int | float | str | None


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    quiet_hours_start: int
    quiet_hours_end: int
    sms_hourly_limit: int
    default_region: str
    # None: no limit.
    actions_per_second: float | None
    # The organisation's values that apply, by field; None where the default applies.
    overrides: dict[str, Value]
    updated_at: datetime | None


def _applies(field: str, value: Value) -> bool:
    if field == "default_region":
        return isinstance(value, str) and is_region(value)
    if field == "actions_per_second":
        return _is_rate(value)
    low, high = _RANGES[field]
    return isinstance(value, int) and low <= value <= high


def merged(settings: Settings, row: OrganizationSettings | None) -> EffectiveSettings:
    """The service defaults with the organisation's stored values where they apply."""
    overrides: dict[str, Value] = {}
    for field in FIELDS:
        value = getattr(row, field) if row is not None else None
        overrides[field] = value if _applies(field, value) else None

    def pick(field: str) -> int:
        value = overrides[field]
        return int(getattr(settings, field)) if value is None else int(value)

    region = overrides["default_region"]
    rate = overrides["actions_per_second"]
    return EffectiveSettings(
        quiet_hours_start=pick("quiet_hours_start"),
        quiet_hours_end=pick("quiet_hours_end"),
        sms_hourly_limit=pick("sms_hourly_limit"),
        default_region=str(region) if region is not None else settings.default_region,
        actions_per_second=float(rate) if rate is not None else None,
        overrides=overrides,
        updated_at=row.updated_at if row is not None else None,
    )


async def effective_settings(
    session: AsyncSession, settings: Settings, organization_id: int
) -> EffectiveSettings:
    """The settings that apply to an organisation (what ``send_sms`` uses)."""
    return merged(settings, await repository.get(session, organization_id))


def _is_rate(value: Value) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and MIN_ACTIONS_PER_SECOND <= value <= MAX_ACTIONS_PER_SECOND
    )


async def action_rate_limits(session: AsyncSession) -> dict[int, float]:
    """The ``actions_per_second`` of every organisation that set one in range, by id (what
    the workers' rate limits apply; a value out of range, written by hand, is no limit)."""
    return {
        org: rate for org, rate in await repository.action_rate_limits(session) if _is_rate(rate)
    }


@dataclass(frozen=True, slots=True)
class OrganizationView:
    """What ``/v1/organization/settings`` shows: the effective settings and the numbers."""

    effective: EffectiveSettings
    sms_numbers: list[str]


async def get_settings(
    session: AsyncSession, principal: Principal, settings: Settings
) -> OrganizationView:
    return OrganizationView(
        await effective_settings(session, settings, principal.org_id),
        await repository.sms_numbers(session, principal.org_id),
    )


async def organization_of_number(session: AsyncSession, number: str) -> int | None:
    """The organisation whose ``sms_numbers`` hold ``number`` (E.164): at most one."""
    return await repository.organization_of_number(session, number)


def _number_taken() -> ConflictError:
    return ConflictError(
        "An SMS number belongs to another organisation",
        code="sms_number_taken",
        details=[{"field": "sms_numbers", "message": "already another organisation's number"}],
    )


async def put_settings(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    values: dict[str, int | float | str | list[str] | None],
    *,
    now: datetime,
) -> OrganizationView:
    """Replace the organisation's overrides; ``null`` returns a field to the service default.

    ``sms_numbers`` replaces the organisation's numbers; a number another organisation holds
    is the 409 ``sms_number_taken`` and nothing changes.
    """
    raw_numbers = values.get("sms_numbers")
    numbers = list(raw_numbers) if isinstance(raw_numbers, list) else []
    if await repository.numbers_held_elsewhere(session, principal.org_id, numbers):
        raise _number_taken()
    numbers_before = await repository.sms_numbers(session, principal.org_id)
    if numbers_before != numbers and not await repository.replace_sms_numbers(
        session, principal.org_id, numbers
    ):
        raise _number_taken()  # another organisation took one meanwhile
    row = await repository.get(session, principal.org_id)
    before = {f: getattr(row, f) for f in FIELDS} if row is not None else dict.fromkeys(FIELDS)
    if row is None:
        row = OrganizationSettings(organization_id=principal.org_id, updated_at=now)
        repository.add(session, row)
    for field in FIELDS:
        setattr(row, field, values.get(field))
    row.updated_at = now
    await session.flush()
    old, new = changed_fields(
        {**before, "sms_numbers": numbers_before},
        {**{f: getattr(row, f) for f in FIELDS}, "sms_numbers": numbers},
    )
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
    return OrganizationView(merged(settings, row), numbers)
