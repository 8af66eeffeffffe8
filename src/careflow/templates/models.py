"""The ``templates`` table: organisations' own email and SMS templates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, BigIntPK, UTCDateTime


class Template(Base):
    """An organisation's own email or SMS template, overriding a built-in of the same key."""

    __tablename__ = "templates"
    __table_args__ = (
        Index("uq_templates_org_key_channel", "organization_id", "key", "channel", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    key: Mapped[str] = mapped_column(String(100), nullable=False)
    channel: Mapped[str] = mapped_column(String(10), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    # An email's text; empty when the template gives only HTML (the text is made from it).
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # An email's HTML alternative (autoescaped); None: made from the text.
    html_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
