"""SQL of organisation settings: one row per organisation, keyed by its id."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.organizations.models import OrganizationSettings, OrganizationSmsNumber


async def get(session: AsyncSession, organization_id: int) -> OrganizationSettings | None:
    # ``session.get``: a transaction that sends many SMS reads the row once.
    return await session.get(OrganizationSettings, organization_id)


def add(session: AsyncSession, row: OrganizationSettings) -> None:
    session.add(row)


async def action_rate_limits(session: AsyncSession) -> list[tuple[int, float]]:
    """Every organisation's ``actions_per_second`` that is set: read by the workers for all
    organisations at once, as the limit applies to whichever organisation's steps they run."""
    rows = await session.execute(
        select(OrganizationSettings.organization_id, OrganizationSettings.actions_per_second).where(
            OrganizationSettings.actions_per_second.is_not(None)
        )
    )
    return [(int(org), float(rate)) for org, rate in rows.tuples() if rate is not None]


async def sms_numbers(session: AsyncSession, organization_id: int) -> list[str]:
    rows = await session.scalars(
        select(OrganizationSmsNumber.number)
        .where(OrganizationSmsNumber.organization_id == organization_id)
        .order_by(OrganizationSmsNumber.id)
    )
    return list(rows)


async def numbers_held_elsewhere(
    session: AsyncSession, organization_id: int, numbers: Sequence[str]
) -> list[str]:
    """Which of ``numbers`` another organisation already receives texts on."""
    if not numbers:
        return []
    rows = await session.scalars(
        select(OrganizationSmsNumber.number).where(
            OrganizationSmsNumber.organization_id != organization_id,
            OrganizationSmsNumber.number.in_(list(numbers)),
        )
    )
    return sorted(rows)


async def replace_sms_numbers(
    session: AsyncSession, organization_id: int, numbers: Sequence[str]
) -> bool:
    """Make ``numbers`` the organisation's; False (and no change) when another organisation
    holds one of them (the unique index: a savepoint keeps the transaction usable)."""
    try:
        async with session.begin_nested():
            await session.execute(
                delete(OrganizationSmsNumber).where(
                    OrganizationSmsNumber.organization_id == organization_id
                )
            )
            session.add_all(
                OrganizationSmsNumber(organization_id=organization_id, number=number)
                for number in numbers
            )
            await session.flush()
    except IntegrityError:
        return False
    return True


async def organization_of_number(session: AsyncSession, number: str) -> int | None:
    """The organisation that receives texts on ``number`` (E.164), if any: the one query
    not scoped to an organisation, as it is how an inbound text finds its organisation."""
    found = await session.scalar(
        select(OrganizationSmsNumber.organization_id).where(OrganizationSmsNumber.number == number)
    )
    return found  # type: ignore[no-any-return]
