"""Rate limits: which of a batch of action steps may run now, and which wait, and until when.

Three kinds of bucket, each a row of ``rate_limit_buckets`` every worker takes from:

- ``org:<id>``: an organisation's ``actions_per_second`` (``/v1/organization/settings``),
  taken by every action step that runs as a job;
- ``sms:<sending number>``: ``CAREFLOW_SMS_PER_SECOND``, taken by SMS steps;
- ``email:<relay host>:<port>``: ``CAREFLOW_EMAIL_PER_SECOND``, taken by email steps.

A bucket holds up to a second's worth of tokens (at least one) and refills at its rate, by
the caller's clock. ``admit`` takes a batch's tokens with one statement per bucket and
returns the steps that got none, each with when a token will be there for it; the runner
defers those as ``throttled``, without counting an attempt. A step that then sends nothing
(its patient opted out, say) has used its place: the limits err on the slow side. With no
limit set (the default), ``admit`` does no database work; the organisations' limits are
read once per ``CAREFLOW_RATE_LIMIT_REFRESH_SECONDS`` per process, so a changed limit
reaches the workers within that time.

A provider that answers that it is rate limiting careflow (Twilio's HTTP 429, an SMTP 421
or 451) empties its bucket until the time it asked for (``provider_refused``).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.config import Settings
from careflow.delivery.email import SmtpConfig
from careflow.organizations import service as organizations
from careflow.ratelimits import repository

log = structlog.get_logger("careflow.ratelimits")

SERVICES_KEY = "rate_limits"
# Steps given a token that have not run yet, by (execution id, action index), with when
# (time.monotonic()): a batch that goes on in a new transaction reads its remaining steps
# again, and they must not take a second token. Forgotten after GRANT_SECONDS (a step
# another worker ran after this one lost its lease).
GRANTS_KEY = "rate_limit_grants"
GRANT_SECONDS = 60.0
ORGANIZATION_LIMIT = "organisation's actions per second"
CHANNEL_LIMITS = {"sms": "SMS per second", "email": "emails per second"}


@dataclass(frozen=True, slots=True)
class Step:
    """One action step of a batch, as the limits see it."""

    execution_id: int
    action_index: int
    organization_id: int
    # "sms" or "email" when the step sends through a provider; None when it does not (an
    # action that only writes rows, or a message already sent).
    channel: str | None


@dataclass(frozen=True, slots=True)
class Held:
    """A step that got no token: it waits until ``until``, for ``reason``."""

    until: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    rate: float  # tokens a second

    @property
    def capacity(self) -> float:
        """A second's worth, and at least one token."""
        return max(1.0, self.rate)


@dataclass(slots=True)
class _OrganizationRates:
    rates: dict[int, float]
    read_at: float  # time.monotonic()


def provider_bucket(settings: Settings, channel: str) -> Bucket | None:
    """The bucket of the provider ``channel`` sends through, or None when it has no limit."""
    if channel == "sms" and settings.sms_per_second is not None:
        sender = settings.twilio_from if settings.sms_provider == "twilio" else None
        return Bucket(f"sms:{sender or settings.sms_provider}", settings.sms_per_second)
    if channel == "email" and settings.email_per_second is not None:
        if settings.smtp_url:
            config = SmtpConfig.from_url(settings.smtp_url)
            relay = f"{config.hostname}:{config.port}"
        else:
            relay = "log"
        return Bucket(f"email:{relay}", settings.email_per_second)
    return None


async def _organization_rates(
    session: AsyncSession, settings: Settings, services: MutableMapping[str, Any]
) -> dict[int, float]:
    """The organisations' ``actions_per_second``, read again once the process's copy is
    ``rate_limit_refresh_seconds`` old."""
    cached = services.get(SERVICES_KEY)
    now = time.monotonic()
    if (
        not isinstance(cached, _OrganizationRates)
        or now - cached.read_at >= settings.rate_limit_refresh_seconds
    ):
        cached = _OrganizationRates(await organizations.action_rate_limits(session), now)
        services[SERVICES_KEY] = cached
    return cached.rates


async def admit(
    session: AsyncSession,
    settings: Settings,
    now: datetime,
    services: MutableMapping[str, Any],
    steps: Sequence[Step],
) -> dict[tuple[int, int], Held]:
    """Take tokens for ``steps`` (in order: the first get them): the steps that must wait,
    by (execution id, action index). Buckets are taken in one order (organisations by id,
    then SMS, then email), so two batches never wait on each other's rows in a cycle."""
    if not steps:
        return {}
    rates = await _organization_rates(session, settings, services)
    providers = [
        (channel, bucket)
        for channel in ("sms", "email")
        if (bucket := provider_bucket(settings, channel)) is not None
    ]
    if not providers and not any(step.organization_id in rates for step in steps):
        return {}
    steps = _not_granted(services, steps)
    held: dict[tuple[int, int], Held] = {}
    by_organization: dict[int, list[Step]] = {}
    for step in steps:
        if step.organization_id in rates:
            by_organization.setdefault(step.organization_id, []).append(step)
    for organization_id in sorted(by_organization):
        bucket = Bucket(f"org:{organization_id}", rates[organization_id])
        await _take(
            session, bucket, by_organization[organization_id], now, held, ORGANIZATION_LIMIT
        )
    for channel, bucket in providers:
        sending = [
            s
            for s in steps
            if s.channel == channel and (s.execution_id, s.action_index) not in held
        ]
        await _take(session, bucket, sending, now, held, CHANNEL_LIMITS[channel])
    grants = services.setdefault(GRANTS_KEY, {})
    granted_at = time.monotonic()
    for step in steps:
        key = (step.execution_id, step.action_index)
        if key not in held:
            grants[key] = granted_at
    return held


def _not_granted(services: MutableMapping[str, Any], steps: Sequence[Step]) -> list[Step]:
    """``steps`` less those an earlier transaction of their batch already gave a token."""
    grants: dict[tuple[int, int], float] = services.setdefault(GRANTS_KEY, {})
    if not grants:
        return list(steps)
    oldest = time.monotonic() - GRANT_SECONDS
    for key in [key for key, at in grants.items() if at < oldest]:
        del grants[key]
    return [s for s in steps if grants.pop((s.execution_id, s.action_index), None) is None]


def ran(services: MutableMapping[str, Any], execution_id: int, action_index: int) -> None:
    """The step ran (or was held back): a token it was given is spent."""
    grants = services.get(GRANTS_KEY)
    if grants:
        grants.pop((execution_id, action_index), None)


async def _take(
    session: AsyncSession,
    bucket: Bucket,
    steps: Sequence[Step],
    now: datetime,
    held: dict[tuple[int, int], Held],
    reason: str,
) -> None:
    """Take ``len(steps)`` tokens at once; the steps past what the bucket gave wait, each a
    token's time after the one before it."""
    if not steps:
        return
    granted, left = await repository.take(
        session,
        bucket.key,
        want=len(steps),
        rate=bucket.rate,
        capacity=bucket.capacity,
        now=now.timestamp(),
    )
    waiting = steps[granted:]
    for position, step in enumerate(waiting):
        seconds = (position + 1 - left) / bucket.rate
        held[step.execution_id, step.action_index] = Held(now + _seconds(seconds), reason)
    if waiting:
        log.info("rate_limited", bucket=bucket.key, held=len(waiting))


async def provider_refused(
    session: AsyncSession, settings: Settings, now: datetime, channel: str, until: datetime
) -> None:
    """The provider of ``channel`` refused for rate and asked careflow to wait until
    ``until``: its bucket gives nothing before then. Without a limit for it there is no
    bucket, and only the refused step waits."""
    bucket = provider_bucket(settings, channel)
    if bucket is None:
        return
    wait = max((until - now).total_seconds(), 0.0)
    await repository.empty(
        session,
        bucket.key,
        rate=bucket.rate,
        capacity=bucket.capacity,
        now=now.timestamp(),
        tokens=1.0 - wait * bucket.rate,
    )
    log.info("provider_rate_limited", bucket=bucket.key, wait_seconds=round(wait, 3))


def _seconds(seconds: float) -> timedelta:
    # A bucket owing days of tokens (a tiny rate) still gives a time datetime can hold.
    return timedelta(seconds=min(seconds, 86_400.0 * 366))
