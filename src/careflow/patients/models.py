"""The ``patient_opt_outs`` table: opt-outs careflow records itself, beside the host's flags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class PatientOptOut(Base):
    """A patient who asked careflow itself to stop a channel (the email's unsubscribe link).

    The host's snapshot flag (``patient.email_opt_out``) is honoured as well; a snapshot
    without it never undoes a row here.
    """

    __tablename__ = "patient_opt_outs"
    __table_args__ = (
        Index(
            "uq_patient_opt_outs_org_patient_channel",
            "organization_id",
            "patient_id",
            "channel",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    patient_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    channel: Mapped[str] = mapped_column(String(8), nullable=False)
    # How it was recorded: ``unsubscribe_link`` or ``admin``.
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class SmsOptOut(Base):
    """A phone (E.164) that texted STOP to the organisation: it gets no SMS from it until it
    texts START. Kept by phone, not by patient: the phone's owner asked, whichever patients
    the host lists with that number."""

    __tablename__ = "sms_opt_outs"
    __table_args__ = (Index("uq_sms_opt_outs_org_phone", "organization_id", "phone", unique=True),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    phone: Mapped[str] = mapped_column(String(16), nullable=False)
    # How it was recorded: ``sms_stop``.
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
