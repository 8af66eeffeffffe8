"""Signing in to the console: with an API token, or with a one-time ticket from
``careflow console-url``; the session that results; audit entries of console actions.

A session is a signed cookie (``signing.ConsoleSession``) naming the organisation, the
subject and the role of the token it came from, ending when the token does. It is checked
on every request without the database beyond the installation's key, read once per process.
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.auth import Principal, Role, TokenVerifier
from careflow.console import repository, signing
from careflow.console.signing import ConsoleSession
from careflow.errors import UnauthorizedError
from careflow.installation import service as installation

#: How long a ``console-url`` link may wait before it is used.
TICKET_SECONDS = 300
#: How long a session from a ticket lasts (a token's own ``exp`` decides otherwise).
TICKET_SESSION_SECONDS = 8 * 3600


async def keys(
    session: AsyncSession, now: datetime, services: MutableMapping[str, Any] | None
) -> signing.Keys:
    ident = await installation.identity(session, now, services)
    return signing.Keys.derive(ident.signing_key)


async def sign_in_with_token(
    verifier: TokenVerifier, token: str, now: datetime
) -> tuple[ConsoleSession, Principal]:
    """The session a bearer token opens; ``UnauthorizedError`` naming the failed check."""
    principal, expires = await verifier.verify_until(token.strip())
    sess = ConsoleSession(
        org_id=principal.org_id,
        sub=principal.sub,
        role=principal.role.value,
        expires=int(expires),
        sid=signing.new_sid(),
    )
    return sess, principal


def mint_ticket(keys: signing.Keys, *, org_id: int, role: Role, sub: str, now: datetime) -> str:
    claims = {
        "org": org_id,
        "role": role.value,
        "sub": sub,
        "exp": int(now.timestamp()) + TICKET_SECONDS,
        "jti": secrets.token_urlsafe(16),
    }
    return signing.sign(keys.ticket, claims)


async def redeem_ticket(
    session: AsyncSession, keys: signing.Keys, ticket: str, now: datetime
) -> tuple[ConsoleSession, Principal]:
    claims = signing.unsign(keys.ticket, ticket, now=now.timestamp())
    if claims is None:
        raise UnauthorizedError("sign-in link is not valid or has expired")
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise UnauthorizedError("sign-in link is not valid or has expired") from None
    org, sub, jti = claims.get("org"), claims.get("sub"), claims.get("jti")
    if not (isinstance(org, int) and isinstance(sub, str) and isinstance(jti, str)):
        raise UnauthorizedError("sign-in link is not valid or has expired")
    if not await repository.use_ticket(session, jti, org, now):
        raise UnauthorizedError("sign-in link was used already")
    sess = ConsoleSession(
        org_id=org,
        sub=sub,
        role=role.value,
        expires=int(now.timestamp()) + TICKET_SESSION_SECONDS,
        sid=signing.new_sid(),
    )
    return sess, Principal(org_id=org, sub=sub, role=role)


async def record_sign_in(
    session: AsyncSession, principal: Principal, *, method: str, now: datetime
) -> None:
    await record_action(
        session,
        principal,
        action="sign_in",
        object_type="console_session",
        object_id=principal.sub,
        after={"method": method},
        now=now,
    )


async def record_action(
    session: AsyncSession,
    principal: Principal,
    *,
    action: str,
    object_type: str,
    object_id: Any,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    now: datetime,
) -> None:
    """The audit entry of a console action that no service audits itself (signing in, an
    execution's retry), in the action's transaction: the action's name (at most 20
    characters), its object, and ``"via": "console"``. A write through a service that
    audits (a rule saved, an episode changed, a job retried) gets that service's entry,
    which says ``"via": "console"`` too (``kit.context.via_var``): one entry per action."""
    await audit.record(
        session,
        principal,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after={**(after or {}), "via": "console"},
        now=now,
    )
