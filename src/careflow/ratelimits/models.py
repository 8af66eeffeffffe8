"""The ``rate_limit_buckets`` table: one token bucket a row, keyed by what it limits."""

from __future__ import annotations

from sqlalchemy import Double, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base

MAX_KEY_LENGTH = 200


class RateLimitBucket(Base):
    """A token bucket: ``tokens`` as they stood at ``updated_at``.

    ``updated_at`` is seconds since the epoch on the clock of the worker that last took from
    it (careflow's injected clock, never the database's), kept as a number so that the
    refill, elapsed seconds times the rate, is the same arithmetic on SQLite and PostgreSQL.
    ``tokens`` goes below zero when a provider refused for rate: the bucket then gives
    nothing until it has refilled past zero. ``taken`` is what the last take got, so the
    statement that takes can return it.
    """

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double, nullable=False)
    updated_at: Mapped[float] = mapped_column(Double, nullable=False)
    taken: Mapped[int] = mapped_column(Integer, nullable=False)
