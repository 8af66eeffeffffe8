from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DEAD = "dead"


class Job(Base):
    """A unit of durable work. Done jobs are deleted; dead ones stay for inspection."""

    __tablename__ = "jobs"
    __table_args__ = (
        # Claiming (``jobs.claim``) reads only queued jobs: the organisations that have some,
        # one index probe each, and each one's due jobs of one priority in (run_at, id)
        # order. The partial index keeps that cost flat however many jobs are pending in the
        # future.
        Index(
            "ix_jobs_queued_organization",
            "organization_id",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(
            "ix_jobs_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index("uq_jobs_dedupe_key", "dedupe_key", unique=True),
        Index("ix_jobs_ref", "ref"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    organization_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=JobStatus.QUEUED)
    # ``registry.Priority``: inside an organisation, due jobs are claimed by priority (lower
    # first), then run_at.
    priority: Mapped[int] = mapped_column(
        SmallInteger, nullable=False, default=1, server_default=text("1")
    )
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    # What the job is about ("appointment:1:50"), so pending work for it can be found and
    # dropped when it changes (a rescheduled or cancelled appointment).
    ref: Mapped[str | None] = mapped_column(String(200))
    # Where the job came from, written in its own INSERT and read by its claim: the
    # X-Request-ID of the request whose work it is (its log lines carry it), and the W3C
    # traceparent of the span that enqueued it (NULL while tracing is off). Jobs a job
    # enqueues inherit both.
    request_id: Mapped[str | None] = mapped_column(String(200))
    traceparent: Mapped[str | None] = mapped_column(String(55))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
