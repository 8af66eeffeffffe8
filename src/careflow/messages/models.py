from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime
from careflow.kit.types import EntityId, EntityRef

# The longest address the message log keeps (RFC 5321 caps a whole path well below it).
MAX_RECIPIENT_LENGTH = 320


class Message(Base):
    """Every email and SMS careflow sent or tried. Ids: ``msg_…`` (email) and ``sms_…``."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("uq_messages_exec_action", "execution_id", "action_index", unique=True),
        # The list's indexes (0014): the organisation, at most one filter's column, then the
        # list's order (created_at, id). The execution filter uses uq_messages_exec_action.
        Index("ix_messages_org_created", "organization_id", "created_at", "id"),
        Index("ix_messages_org_channel", "organization_id", "channel", "created_at", "id"),
        Index("ix_messages_org_status", "organization_id", "status", "created_at", "id"),
        Index("ix_messages_org_patient", "organization_id", "patient_id", "created_at", "id"),
        # Which message a provider's id is already held by (adopting one after a lost answer).
        Index("ix_messages_provider_message_id", "provider_message_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    channel: Mapped[str] = mapped_column(String(8), nullable=False)
    patient_id: Mapped[EntityRef | None] = mapped_column(EntityId)
    recipient: Mapped[str] = mapped_column(String(MAX_RECIPIENT_LENGTH), nullable=False)
    template: Mapped[str] = mapped_column(String(100), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    provider: Mapped[str] = mapped_column(String(16), nullable=False)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    execution_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("executions.id", ondelete="SET NULL")
    )
    action_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The steps of delivery, each when it happened: accepted by the provider (an SMS's
    # ``queued``), sent on, delivered, and undelivered or failed (``failed_at``).
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The provider's error code for an undelivered or failed message (Twilio's ErrorCode).
    error_code: Mapped[str | None] = mapped_column(String(16))
