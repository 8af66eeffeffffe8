from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime


class AuditEntry(Base):
    """Append-only: written in the change's own transaction, never updated or deleted."""

    __tablename__ = "audit_log"
    __table_args__ = (
        # The list's indexes (0014): the organisation, at most one filter's column, then the
        # list's order (created_at, id).
        Index("ix_audit_log_org_created", "organization_id", "created_at", "id"),
        Index("ix_audit_log_org_object_id", "organization_id", "object_id", "created_at", "id"),
        Index("ix_audit_log_org_type", "organization_id", "object_type", "created_at", "id"),
        Index("ix_audit_log_org_actor", "organization_id", "actor_sub", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    actor_sub: Mapped[str] = mapped_column(String(200), nullable=False)
    actor_role: Mapped[str] = mapped_column(String(20), nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    object_type: Mapped[str] = mapped_column(String(40), nullable=False)
    object_id: Mapped[str] = mapped_column(String(64), nullable=False)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(200))  # kit.middleware's bound
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
