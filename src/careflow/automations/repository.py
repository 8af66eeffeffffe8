"""SQL for automation rules. Every query starts from the organisation's rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.automations.models import AutomationRule
from careflow.executions.models import Execution


def _scoped(organization_id: int) -> Select[AutomationRule]:
    return select(AutomationRule).where(AutomationRule.organization_id == organization_id)


async def get(
    session: AsyncSession, organization_id: int, rule_id: int, *, for_update: bool = False
) -> AutomationRule | None:
    """One rule of the organisation; another organisation's rule is simply not found.

    ``for_update`` locks the row (PostgreSQL) so concurrent updates bump the version in turn.
    """
    query = _scoped(organization_id).where(AutomationRule.id == rule_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def list_page(
    session: AsyncSession,
    organization_id: int,
    *,
    trigger_event: str | None,
    enabled: bool | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[AutomationRule], int]:
    query = _scoped(organization_id)
    if trigger_event is not None:
        query = query.where(AutomationRule.trigger_event == trigger_event)
    if enabled is not None:
        query = query.where(AutomationRule.enabled == enabled)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = (
        (await session.execute(query.order_by(AutomationRule.id).offset(offset).limit(limit)))
        .scalars()
        .all()
    )
    return rows, total


async def enabled_for_trigger(
    session: AsyncSession, organization_id: int, trigger_event: str
) -> Sequence[AutomationRule]:
    # Served by ix_automation_rules_org_trigger (organization_id, trigger_event, enabled).
    query = (
        _scoped(organization_id)
        .where(AutomationRule.trigger_event == trigger_event, AutomationRule.enabled == true())
        .order_by(AutomationRule.id)
    )
    return (await session.execute(query)).scalars().all()


async def add(session: AsyncSession, rule: AutomationRule) -> AutomationRule:
    session.add(rule)
    await session.flush()
    return rule


async def delete(session: AsyncSession, rule: AutomationRule) -> None:
    await session.delete(rule)
    await session.flush()


async def run_stats(
    session: AsyncSession, organization_id: int, rule_ids: Sequence[int]
) -> dict[int, tuple[int, datetime | None]]:
    """(executions that ran, the last one's time) per rule: skipped ones do not count.

    Read from the partial index ix_executions_rule_ran rather than kept in a counter row,
    which every dispatch of a busy rule would otherwise queue to update.
    """
    if not rule_ids:
        return {}
    rows = await session.execute(
        select(
            Execution.automation_rule_id,
            func.count(),
            func.max(Execution.executed_at),
        )
        .where(
            Execution.organization_id == organization_id,
            Execution.automation_rule_id.in_(rule_ids),
            Execution.status != "skipped",
        )
        .group_by(Execution.automation_rule_id)
    )
    return {rule_id: (int(count), last) for rule_id, count, last in rows if rule_id is not None}
