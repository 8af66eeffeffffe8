"""``console_tickets``: the one-time sign-in links ``careflow console-url`` printed and
that were used, so a link signs in once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, UTCDateTime


class ConsoleTicket(Base):
    __tablename__ = "console_tickets"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[int] = mapped_column()
    used_at: Mapped[datetime] = mapped_column(UTCDateTime())
