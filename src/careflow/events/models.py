from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # The producer's event_id makes delivery idempotent within an organisation.
        Index("uq_events_org_event_id", "organization_id", "event_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="accepted")
    episode_id: Mapped[int | None] = mapped_column(BigIntPK)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PatientMilestone(Base):
    """A derived trigger that has fired for a patient (``patient.first_login`` …): at most once."""

    __tablename__ = "patient_milestones"
    __table_args__ = (
        Index(
            "uq_patient_milestones_org_patient_name",
            "organization_id",
            "patient_id",
            "name",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    patient_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    event_pk: Mapped[int | None] = mapped_column(BigIntPK)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
