"""SQL of organisation templates."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.templates import repository as repo
from careflow.templates.models import Template
from tests.conftest import T0


class TestRepository:
    async def test_a_duplicate_insert_reports_false_and_keeps_the_session_usable(
        self, engine: AsyncEngine
    ) -> None:
        def row(body: str) -> Template:
            return Template(
                organization_id=1,
                key="recall",
                channel="sms",
                subject=None,
                body=body,
                created_at=T0,
                updated_at=T0,
            )

        async with create_sessionmaker(engine)() as session, session.begin():
            assert await repo.insert(session, row("first"))
            # What a concurrent PUT that lost the race sees: the unique index refuses it.
            assert not await repo.insert(session, row("second"))
            kept = await repo.get(session, 1, "recall", "sms")
            assert kept is not None and kept.body == "first"
