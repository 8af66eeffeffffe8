"""SMS quiet hours: a pure function of (now, the patient's time zone, the window)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def patient_zone(tz_name: Any) -> tzinfo:
    """The patient's IANA zone; anything missing or unknown falls back to UTC.

    A producer's bad time zone must not stop delivery, so it is treated as UTC rather
    than as an error.
    """
    if not isinstance(tz_name, str) or not tz_name.strip():
        return UTC
    try:
        return ZoneInfo(tz_name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def is_quiet(local_hour: int, start_hour: int, end_hour: int) -> bool:
    """Whether a local hour falls in the window ``[start, end)``, which may span midnight."""
    if start_hour == end_hour:
        return False  # an empty window: quiet hours switched off
    if start_hour < end_hour:
        return start_hour <= local_hour < end_hour
    return local_hour >= start_hour or local_hour < end_hour


def next_allowed_time(
    now_utc: datetime, tz_name: str | None, start_hour: int, end_hour: int
) -> datetime | None:
    """The first UTC instant after quiet hours end, or None when sending is allowed now.

    The window is read on the patient's wall clock, so its UTC position moves with DST.
    When ``end_hour`` falls in a spring-forward gap, the first existing instant after the
    gap is returned (zoneinfo resolves the missing wall time with the pre-gap offset).
    """
    for hour in (start_hour, end_hour):
        if not 0 <= hour <= 23:
            raise ValueError(f"quiet hours must be hours of the day (0-23), got {hour}")
    if now_utc.tzinfo is None:
        now_utc = now_utc.replace(tzinfo=UTC)
    zone = patient_zone(tz_name)
    local = now_utc.astimezone(zone)
    if not is_quiet(local.hour, start_hour, end_hour):
        return None
    end_date = local.date()
    # In a window spanning midnight, the evening part ends on the next calendar day.
    if start_hour > end_hour and local.hour >= start_hour:
        end_date += timedelta(days=1)
    resume = datetime.combine(end_date, time(end_hour), tzinfo=zone).astimezone(UTC)
    if resume <= now_utc:
        # Only reachable in a DST fold where the wall clock repeats the quiet hour; the
        # earliest sensible resume is the next minute rather than a time in the past.
        resume = now_utc.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return resume
