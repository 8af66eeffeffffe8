"""Typed outcomes a job handler raises to tell the runner what to do next."""

from __future__ import annotations

from datetime import datetime


class JobError(Exception):
    pass


class RetryableJobError(JobError):
    """Try again later (exponential backoff with jitter, or ``delay_seconds`` when given)."""

    def __init__(self, message: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PermanentJobError(JobError):
    """Retrying cannot help: the job is marked dead at once."""


class DeferJob(JobError):
    """Run again at ``until`` without counting an attempt (quiet hours, rate windows)."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until
        self.reason = reason
