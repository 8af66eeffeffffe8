from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, JSONType, UTCDateTime


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # A key is the organisation's (SPEC §8): one row per key, whatever the endpoint.
        Index("uq_idempotency_keys_org_key", "organization_id", "key", unique=True),
        Index("ix_idempotency_keys_expires", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    endpoint: Mapped[str] = mapped_column(String(100), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RuleRevision(Base):
    """A token per (organisation, rule set) that every write to the set replaces.

    Processes cache compiled rule sets and re-check one row per event instead of loading
    every rule: exact across any number of processes, because the token changes in the
    same transaction as the set. A random token rather than a counter, so a database
    restored to an earlier state can never hand out a revision a cache has seen.
    """

    __tablename__ = "rule_revisions"

    organization_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    scope: Mapped[str] = mapped_column(String(100), primary_key=True)
    revision: Mapped[str] = mapped_column(String(32), nullable=False)
