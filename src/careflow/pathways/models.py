from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class PathwayRule(Base):
    __tablename__ = "pathway_rules"
    __table_args__ = (
        # The database, not a read-then-write check, decides a race between two creates.
        Index(
            "uq_pathway_rules_org_trigger_priority",
            "organization_id",
            "trigger_type",
            "priority",
            unique=True,
        ),
    )

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    trigger_type: Mapped[str] = mapped_column(String(64), nullable=False)
    rule_name: Mapped[str] = mapped_column(String(200), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    conditions: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    creation_mode: Mapped[str | None] = mapped_column(String(20))
    inbox_visibility: Mapped[str | None] = mapped_column(String(20))
    journey_type: Mapped[str | None] = mapped_column(String(64))
    suggested_assignment: Mapped[str | None] = mapped_column(String(200))
    suggested_priority: Mapped[str | None] = mapped_column(String(20))
    expected_next_actor: Mapped[str | None] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class PathwayConfig(Base):
    """An organisation's base config for one trigger type (absent: the catalog default)."""

    __tablename__ = "pathway_configs"
    __table_args__ = (
        Index("uq_pathway_configs_org_trigger", "organization_id", "trigger_type", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    trigger_type: Mapped[str] = mapped_column(String(64), nullable=False)
    creation_mode: Mapped[str] = mapped_column(String(20), nullable=False)
    inbox_visibility: Mapped[str] = mapped_column(String(20), nullable=False)
    journey_type: Mapped[str] = mapped_column(String(64), nullable=False)
    suggested_assignment: Mapped[str] = mapped_column(String(200), nullable=False)
    suggested_priority: Mapped[str] = mapped_column(String(20), nullable=False)
    expected_next_actor: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Episode(Base):
    __tablename__ = "episodes"
    __table_args__ = (
        # The newest open episode of a journey is the first entry of one range (0003).
        Index(
            "ix_episodes_org_patient_journey",
            "organization_id",
            "patient_id",
            "journey_type",
            "status",
            "created_at",
            "id",
        ),
        # The list's indexes (0014): the organisation, at most one filter's column, then the
        # list's order (created_at, id). The patient filter uses the index above.
        Index("ix_episodes_org_created", "organization_id", "created_at", "id"),
        Index("ix_episodes_org_journey", "organization_id", "journey_type", "created_at", "id"),
        Index("ix_episodes_org_status", "organization_id", "status", "created_at", "id"),
        Index(
            "ix_episodes_org_visibility", "organization_id", "inbox_visibility", "created_at", "id"
        ),
        Index(
            "ix_episodes_org_assignment",
            "organization_id",
            "suggested_assignment",
            "created_at",
            "id",
        ),
        Index(
            "ix_episodes_org_priority", "organization_id", "suggested_priority", "created_at", "id"
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    patient_id: Mapped[EntityRef | None] = mapped_column(EntityId)
    journey_type: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    inbox_visibility: Mapped[str] = mapped_column(String(20), nullable=False)
    suggested_assignment: Mapped[str] = mapped_column(String(200), nullable=False)
    suggested_priority: Mapped[str] = mapped_column(String(20), nullable=False)
    expected_next_actor: Mapped[str] = mapped_column(String(20), nullable=False)
    assignee: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class EpisodeEvent(Base):
    __tablename__ = "episode_events"
    __table_args__ = (Index("uq_episode_events_event", "event_pk", unique=True),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    episode_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("episodes.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event_pk: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    )
    event_id: Mapped[str | None] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
