"""The ``entities`` table: the latest snapshot of each entity a producer sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class Entity(Base):
    """The latest snapshot careflow has seen of a producer's entity."""

    __tablename__ = "entities"
    __table_args__ = (
        Index(
            "uq_entities_org_type_id", "organization_id", "entity_type", "entity_id", unique=True
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
