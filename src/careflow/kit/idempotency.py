"""``Idempotency-Key`` for POST endpoints: the same request twice does the work once.

Typical use in an endpoint (the request's ``SessionDep`` session does the work)::

    async with idempotent(
        request, session, organization_id=principal.org_id, endpoint="pathway-rules.create"
    ) as guard:
        if guard.replay is not None:
            return guard.replay
        rule = await service.create_rule(session, principal, body, now)
        return await guard.respond(201, {"data": ..., "meta": ...})

Without the header the guard does nothing. With it, keys are scoped to the organisation
(SPEC §8): one row per ``(organization_id, key)``, holding the endpoint that used it and
the sha256 of the body's canonical JSON:

- same key, same body, first request finished → the stored response again (same status and
  body) with ``Idempotent-Replayed: true``;
- same key, different body → 422 ``IdempotencyKeyReusedError``; so is the same key on
  another of the organisation's idempotent endpoints while it is kept there, whatever the
  body (the unique index on ``(organization_id, key)`` decides, so two first uses at one
  instant cannot both hold it);
- same key while the first request is still running → 409 ``IdempotencyKeyInUseError``.

How: :func:`begin` claims the key with an ``in_flight`` row committed at once in its own
session, so a concurrent request sees the claim (the unique index decides who holds it).
:func:`complete` turns the claim into the stored response *in the request's transaction*,
so the response and the work commit together or not at all. When the work fails,
:func:`release` deletes the claim so a retry can proceed. A claim whose holder died (or
whose transaction failed at commit) is only a lease: past ``IN_FLIGHT_LEASE`` it counts as
expired, and an expired key — claim or stored response — is treated as new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError, ValidationError
from careflow.kit.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
IN_FLIGHT = "in_flight"
COMPLETED = "completed"
RETENTION = timedelta(hours=24)
# Long enough for any request to finish; short enough that a crashed one frees its key soon.
IN_FLIGHT_LEASE = timedelta(minutes=5)
MAX_KEY_LENGTH = 255

_log = structlog.get_logger("careflow.idempotency")


def fingerprint(body: Any) -> str:
    """sha256 of the canonical JSON of ``body`` (sorted keys, no insignificant spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored response of the request that first used the key."""

    status_code: int
    body: Any

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body, status_code=self.status_code, headers={REPLAYED_HEADER: "true"}
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key; finish with :func:`complete` or :func:`release`."""

    id: int
    organization_id: int
    endpoint: str
    key: str
    fingerprint: str
    # With the id, identifies this claim: SQLite reuses a deleted row's id, and a takeover
    # of an expired claim always happens later than the claim it replaces.
    claimed_at: datetime

    def _is_mine(self) -> ColumnElement[bool]:
        return (IdempotencyKey.id == self.id) & (IdempotencyKey.created_at == self.claimed_at)


def validate_key(key: str) -> str:
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            details=[
                {
                    "field": HEADER,
                    "message": f"must be a non-empty string of at most {MAX_KEY_LENGTH} characters",
                }
            ]
        )
    return key


async def begin(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    organization_id: int,
    endpoint: str,
    key: str,
    body: Any,
    now: datetime,
) -> Replay | Claim:
    """Claim ``key`` (own transaction, committed at once), or answer what the key already holds.

    Raises ``IdempotencyKeyReusedError`` (different body, or another endpoint) or ``IdempotencyKeyInUseError``
    (the first request is still running).
    """
    fp = fingerprint(body)
    # A few rounds: between our failed insert and our read the holder may release or expire.
    for _ in range(4):
        async with sessionmaker() as session:
            row = IdempotencyKey(
                organization_id=organization_id,
                endpoint=endpoint,
                key=key,
                fingerprint=fp,
                status=IN_FLIGHT,
                # The column is NOT NULL: an explicit None is stored as JSON null.
                response_body=None,
                created_at=now,
                expires_at=now + IN_FLIGHT_LEASE,
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
            else:
                return Claim(row.id, organization_id, endpoint, key, fp, now)

            # The unique index is on (organisation, key): the row that holds it may be
            # another endpoint's.
            existing = await session.scalar(
                select(IdempotencyKey).where(
                    IdempotencyKey.organization_id == organization_id,
                    IdempotencyKey.key == key,
                )
            )
            if existing is None:
                continue
            if existing.expires_at <= now:
                # Conditional on still being expired: a holder that just renewed keeps it.
                await session.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.id == existing.id, IdempotencyKey.expires_at <= now
                    )
                )
                await session.commit()
                continue
            if existing.endpoint != endpoint or existing.fingerprint != fp:
                # The organisation's key already names another request (SPEC §8).
                raise IdempotencyKeyReusedError()
            if existing.status == COMPLETED and existing.response_status is not None:
                return Replay(existing.response_status, existing.response_body)
            raise IdempotencyKeyInUseError()
    raise IdempotencyKeyInUseError()


async def complete(
    session: AsyncSession, claim: Claim, *, status_code: int, body: Any, now: datetime
) -> None:
    """Store the response in ``session``'s transaction: it commits with the work or not at all."""
    result = await session.execute(
        update(IdempotencyKey)
        .where(claim._is_mine(), IdempotencyKey.status == IN_FLIGHT)
        .values(
            status=COMPLETED,
            response_status=status_code,
            response_body=body,
            expires_at=now + RETENTION,
        )
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    if result.rowcount != 1:
        # Our lease ran out and another request took the key over: it does the work, not us.
        raise IdempotencyKeyInUseError()


async def release(sessionmaker: async_sessionmaker[AsyncSession], claim: Claim) -> None:
    """Give the key up (own transaction) after the work failed, so a retry can proceed."""
    async with sessionmaker() as session:
        await session.execute(
            delete(IdempotencyKey).where(claim._is_mine(), IdempotencyKey.status == IN_FLIGHT)
        )
        await session.commit()


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    """Delete every expired key (a maintenance job may call it); returns how many."""
    result = await session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount


class IdempotencyGuard:
    """What :func:`idempotent` yields: a replay to return, or ``respond`` to store and answer."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        now: datetime,
        claim: Claim | None = None,
        replay: JSONResponse | None = None,
    ) -> None:
        self.replay = replay
        self._session = session
        self._now = now
        self._claim = claim
        self.stored = False

    async def respond(
        self, status_code: int, body: Any, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        """The response to send; stored for replays when the request carried a key."""
        if self._claim is not None:
            await complete(
                self._session, self._claim, status_code=status_code, body=body, now=self._now
            )
            self.stored = True
        return JSONResponse(body, status_code=status_code, headers=headers)


async def _body_of(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        # Not JSON (the endpoint will refuse it anyway): fingerprint the bytes as text.
        return raw.decode("latin-1")


@asynccontextmanager
async def idempotent(
    request: Request,
    session: AsyncSession,
    *,
    organization_id: int,
    endpoint: str,
    body: Any = None,
) -> AsyncIterator[IdempotencyGuard]:
    """Guard one POST by its ``Idempotency-Key`` header (see the module docstring).

    ``body`` defaults to the request's JSON body. When the block raises, the request's
    session is rolled back first (it may hold locks on the claim row or, on SQLite, the
    database) and the claim is released.
    """
    now: datetime = request.app.state.clock.now()
    key = request.headers.get(HEADER)
    if key is None:
        yield IdempotencyGuard(session=session, now=now)
        return
    validate_key(key)
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    payload = body if body is not None else await _body_of(request)
    outcome = await begin(
        maker,
        organization_id=organization_id,
        endpoint=endpoint,
        key=key,
        body=payload,
        now=now,
    )
    if isinstance(outcome, Replay):
        yield IdempotencyGuard(session=session, now=now, replay=outcome.response())
        return
    guard = IdempotencyGuard(session=session, now=now, claim=outcome)
    try:
        yield guard
    except BaseException:
        try:
            await session.rollback()
            await release(maker, outcome)
        except Exception:
            # The lease still frees the key later; the original error is the one to report.
            _log.warning("idempotency_release_failed", endpoint=endpoint, exc_info=True)
        raise
    if not guard.stored:
        # The block answered without respond(): nothing to replay, so free the key with the
        # work's own commit.
        await session.execute(
            delete(IdempotencyKey)
            .where(outcome._is_mine())
            .execution_options(synchronize_session=False)
        )
