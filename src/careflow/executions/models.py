from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime
from careflow.kit.types import EntityId, EntityRef


class Execution(Base):
    """One run of one rule for one trigger occurrence."""

    __tablename__ = "executions"
    __table_args__ = (
        # A redelivered event or a second fire of the same occurrence can never make a second run.
        Index("uq_executions_rule_occurrence", "automation_rule_id", "occurrence_key", unique=True),
        # The list's indexes (0014): the organisation, at most one filter's column, then the
        # list's order (executed_at, id); the first page and meta.total read one range.
        Index("ix_executions_org_executed", "organization_id", "executed_at", "id"),
        Index(
            "ix_executions_org_rule", "organization_id", "automation_rule_id", "executed_at", "id"
        ),
        Index("ix_executions_org_status", "organization_id", "status", "executed_at", "id"),
        Index("ix_executions_org_event", "organization_id", "trigger_event", "executed_at", "id"),
        # The console's patient filter and a patient's journey (0015).
        Index("ix_executions_org_patient", "organization_id", "patient_id", "executed_at", "id"),
        Index("ix_executions_event", "event_pk"),
        # execution_count / last_executed_at of a rule, read from this index alone.
        Index(
            "ix_executions_rule_ran",
            "automation_rule_id",
            "executed_at",
            postgresql_where=text("status <> 'skipped'"),
            sqlite_where=text("status <> 'skipped'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    automation_rule_id: Mapped[int | None] = mapped_column(
        BigIntPK,
        ForeignKey("automation_rules.id", ondelete="SET NULL"),
    )
    automation_rule_name: Mapped[str] = mapped_column(String(200), nullable=False)
    rule_version: Mapped[int] = mapped_column(Integer, nullable=False)
    trigger_event: Mapped[str] = mapped_column(String(64), nullable=False)
    trigger_entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    trigger_entity_id: Mapped[EntityRef] = mapped_column(EntityId, nullable=False)
    patient_id: Mapped[EntityRef | None] = mapped_column(EntityId)
    occurrence_key: Mapped[str] = mapped_column(String(200), nullable=False)
    event_pk: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("events.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # The rule's actions as they were when the execution was created.
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    executed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExecutionAction(Base):
    """The result of one action of one execution; the key for its side effect's idempotency."""

    __tablename__ = "execution_actions"
    __table_args__ = (
        Index("uq_execution_actions_exec_index", "execution_id", "action_index", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    execution_id: Mapped[int] = mapped_column(
        BigIntPK,
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    )
    action_index: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
