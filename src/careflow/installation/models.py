"""The ``installation`` table: one row, this deployment's identity."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from careflow.db import Base, UTCDateTime

#: The primary key of the one row: a second INSERT conflicts on it.
SINGLETON = 1


class Installation(Base):
    """Random values drawn when the deployment first needed them, then never changed.

    ``installation_id`` goes into every Message-ID, so two deployments never write the same
    one; ``signing_key`` signs unsubscribe links (a database restored elsewhere keeps
    honouring the links it sent).
    """

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    installation_id: Mapped[str] = mapped_column(String(32), nullable=False)
    signing_key: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
