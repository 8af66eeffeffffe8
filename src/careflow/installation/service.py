"""This deployment's identity, read once per process (created if missing).

Callers that run often (every email) pass the process's ``services`` mapping, where the
identity is kept after the first read: it never changes once written.
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.installation import repository

SERVICES_KEY = "installation"


@dataclass(frozen=True, slots=True)
class Identity:
    installation_id: str  # 16 lowercase hex digits
    signing_key: str


async def identity(
    session: AsyncSession, now: datetime, services: MutableMapping[str, Any] | None = None
) -> Identity:
    """The deployment's identity, created on first use (in the caller's transaction)."""
    if services is not None:
        kept = services.get(SERVICES_KEY)
        if isinstance(kept, Identity):
            return kept
    row = await repository.get(session)
    if row is not None:
        found = Identity(installation_id=row.installation_id, signing_key=row.signing_key)
        if services is not None:
            services[SERVICES_KEY] = found
        return found
    # The migration writes the row; a database emptied since is given a new one here. Not
    # kept in ``services``: this transaction may yet roll back, and the next read decides.
    await repository.insert_if_absent(
        session, installation_id=new_installation_id(), signing_key=new_signing_key(), now=now
    )
    row = await repository.get(session)
    assert row is not None  # ours, or the one a concurrent process wrote first
    return Identity(installation_id=row.installation_id, signing_key=row.signing_key)


def new_installation_id() -> str:
    return secrets.token_hex(8)


def new_signing_key() -> str:
    return secrets.token_urlsafe(48)
