"""The one source of "now" for the engine, so tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(UTC)).astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now


def isoformat_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``: the only timestamp format careflow answers with."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


# The instants careflow takes: far enough inside Python's range that a reminder's offset (a
# week at most) and the conversion to UTC both stay in it. 0001-01-01T00:00:00+01:00 has no
# UTC time at all, and a reminder a day before 0001-01-02 none either.
_MARGIN = timedelta(days=8)
EARLIEST_INSTANT = datetime.min.replace(tzinfo=UTC) + _MARGIN
LATEST_INSTANT = datetime.max.replace(tzinfo=UTC) - _MARGIN


def in_range(instant: datetime) -> bool:
    """Whether an aware ``instant`` lies between ``EARLIEST_INSTANT`` and ``LATEST_INSTANT``."""
    try:
        utc = instant.astimezone(UTC)
    except OverflowError:
        return False
    return EARLIEST_INSTANT <= utc <= LATEST_INSTANT


def parse_instant(value: Any) -> datetime | None:
    """An ISO 8601 instant with an offset (``Z`` allowed, and ``t``/``z`` as RFC 3339 lets
    them be written), within careflow's range; anything else is no time at all."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and in_range(parsed) else None
