from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class FormStatus:
    PENDING = "pending"
    COMPLETED = "completed"


class Form(Base):
    __tablename__ = "forms"
    __table_args__ = (
        # Never two pending instances of one template for one patient, even under races.
        Index(
            "uq_forms_pending_template",
            "organization_id",
            "patient_id",
            "form_template_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("uq_forms_exec_action", "execution_id", "action_index", unique=True),
        Index("ix_forms_org_patient", "organization_id", "patient_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    patient_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    form_template_id: Mapped[int] = mapped_column(Integer, nullable=False)
    blocking: Mapped[bool] = mapped_column(Boolean, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=FormStatus.PENDING)
    execution_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("executions.id", ondelete="SET NULL")
    )
    action_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
