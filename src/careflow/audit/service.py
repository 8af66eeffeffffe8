"""Audit entries, written in the same transaction as the change they describe."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.audit import repository
from careflow.audit.models import AuditEntry
from careflow.audit.repository import AuditFilters
from careflow.auth import Principal
from careflow.kit.context import current_request_id, current_via
from careflow.kit.pagination import PageParams

#: The actor of changes careflow makes itself, not on a caller's request (routing opens
#: episodes in the worker): ``actor_sub`` and ``actor_role`` of their entries.
SYSTEM_SUB = "careflow"
SYSTEM_ROLE = "system"

_audit_log: Table = AuditEntry.__table__  # type: ignore[assignment]
_INSERT = insert(_audit_log)


def changed_fields(
    before: dict[str, Any], after: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields whose values differ, before and after."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after.get(k) for k in keys}


def _entry(
    organization_id: int,
    actor: tuple[str, str],
    *,
    action: str,
    object_type: str,
    object_id: Any,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    via = current_via()
    if via is not None:
        # A change made through the console: the same entry the API's operation writes,
        # saying where it was made.
        after = {**(after or {}), "via": via}
    return {
        "organization_id": organization_id,
        "actor_sub": actor[0],
        "actor_role": actor[1],
        "action": action,
        "object_type": object_type,
        "object_id": str(object_id),
        "before": before,
        "after": after,
        "request_id": current_request_id(),
        "created_at": now,
    }


async def record(
    session: AsyncSession,
    principal: Principal,
    *,
    action: str,
    object_type: str,
    object_id: Any,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> None:
    """An entry for a change a caller made, in the change's own transaction."""
    actor = (principal.sub, principal.role.value)
    session.add(
        AuditEntry(
            **_entry(
                principal.org_id,
                actor,
                action=action,
                object_type=object_type,
                object_id=object_id,
                before=before,
                after=after,
                now=now,
            )
        )
    )


async def record_by_system(
    session: AsyncSession,
    *,
    organization_id: int,
    action: str,
    object_type: str,
    object_id: Any,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: datetime,
) -> None:
    """An entry for a change careflow made itself: the actor is careflow (``SYSTEM_SUB``,
    ``SYSTEM_ROLE``). Written with the change; in a worker's batch it is held with the
    batch's other writes (``db.write``)."""
    values = _entry(
        organization_id,
        (SYSTEM_SUB, SYSTEM_ROLE),
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        now=now,
    )
    await db.write(session, "audit_log.insert", _INSERT, values)


async def list_entries(
    session: AsyncSession, principal: Principal, filters: AuditFilters, page: PageParams
) -> tuple[Sequence[AuditEntry], int]:
    """The caller's organisation's entries, newest first, and how many match in all."""
    return await repository.list_entries(
        session, principal.org_id, filters, limit=page.limit, offset=page.offset
    )
