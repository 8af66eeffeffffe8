"""The ``organization_settings`` table: an organisation's overrides of the service defaults,
and the ranges a stored value must lie in to apply."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime

# Quiet hours are hours of the patient's day; the cap counts SMS per organisation per hour.
FIRST_HOUR, LAST_HOUR = 0, 23
MAX_SMS_HOURLY_LIMIT = 1_000_000
# The longest E.164 number: '+' and 15 digits.
MAX_E164_LENGTH = 16
MAX_SMS_NUMBERS = 50
# An organisation's actions a second: from one every hundred seconds to a million a second.
MIN_ACTIONS_PER_SECOND, MAX_ACTIONS_PER_SECOND = 0.01, 1_000_000.0


class OrganizationSettings(Base):
    """Per-organisation overrides of the service defaults (quiet hours, SMS cap, phone region)
    and the organisation's rate limit."""

    __tablename__ = "organization_settings"

    organization_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    quiet_hours_start: Mapped[int | None] = mapped_column(Integer)
    quiet_hours_end: Mapped[int | None] = mapped_column(Integer)
    sms_hourly_limit: Mapped[int | None] = mapped_column(Integer)
    # ISO 3166 alpha-2: where phone numbers without a country code are read from.
    default_region: Mapped[str | None] = mapped_column(String(2))
    # Action steps the organisation's executions may run a second, shared by every worker
    # (``ratelimits/``); None: no limit.
    actions_per_second: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class OrganizationSmsNumber(Base):
    """A number (E.164) the organisation receives texts on: its ``sms_numbers`` setting.

    A number belongs to one organisation (the unique index): an inbound text to it is that
    organisation's.
    """

    __tablename__ = "organization_sms_numbers"
    __table_args__ = (
        Index("uq_organization_sms_numbers_number", "number", unique=True),
        Index("ix_organization_sms_numbers_org", "organization_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    number: Mapped[str] = mapped_column(String(MAX_E164_LENGTH), nullable=False)
