from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class SegmentMember(Base):
    __tablename__ = "segment_members"
    __table_args__ = (
        Index(
            "uq_segment_members_org_segment_patient",
            "organization_id",
            "segment_id",
            "patient_id",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    segment_id: Mapped[int] = mapped_column(Integer, nullable=False)
    patient_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
