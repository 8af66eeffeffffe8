"""Entity snapshots kept from events: merged field by field, newest first, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.entities.models import Entity
from careflow.events import service
from careflow.events.schemas import EventIn
from careflow.kit.clock import FrozenClock
from tests.fixtures.database import count
from tests.fixtures.factories import PATIENT, booked, onboarded, post_event


class TestSnapshots:
    async def _entity(self, engine, entity_type: str, entity_id: Any) -> dict[str, Any] | None:
        async with create_sessionmaker(engine)() as session:
            row = await session.scalar(
                select(Entity).where(
                    Entity.entity_type == entity_type, Entity.entity_id == entity_id
                )
            )
        return None if row is None else row.data

    async def test_events_merge_into_snapshots(self, client, auth, engine, clock) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        clock.advance(minutes=1)
        await post_event(
            client, auth, "patient.updated", {"patient": {"id": 100, "email": "new@example.com"}}
        )
        await post_event(client, auth, "appointment.booked", booked(50))
        patient = await self._entity(engine, "patient", 100)
        assert patient == {**PATIENT, "email": "new@example.com"}
        assert (await self._entity(engine, "appointment", 50))["type"] == "video"

    async def test_older_event_only_fills_gaps(self, client, auth, engine) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        await post_event(
            client,
            auth,
            "patient.updated",
            {"patient": {"id": 100, "email": "stale@example.com", "tags": ["vip"]}},
            occurred_at="2025-02-01T00:00:00Z",
        )
        patient = await self._entity(engine, "patient", 100)
        assert patient["email"] == PATIENT["email"]
        assert patient["tags"] == ["vip"]

    async def test_string_and_integer_ids_key_alike(self, client, auth, engine) -> None:
        await post_event(client, auth, "patient.onboarded", {"patient": {"id": "100", "a": 1}})
        await post_event(client, auth, "patient.updated", {"patient": {"id": 100, "b": 2}})
        assert await count(engine, Entity) == 1


class TestSnapshotWrites:
    async def test_a_snapshot_that_changes_nothing_is_not_written_again(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        maker = create_sessionmaker(engine)
        updates: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE ENTITIES"):
                updates.append(statement)

        same = EventIn.model_validate(
            {
                "type": "patient.onboarded",
                "occurred_at": "2025-02-15T09:00:00Z",
                "data": {"patient": {"id": 7, "first_name": "P"}},
            }
        )
        changed = EventIn.model_validate(
            {
                "type": "patient.onboarded",
                "occurred_at": "2025-02-15T09:30:00Z",
                "data": {"patient": {"id": 7, "first_name": "Q"}},
            }
        )
        async with maker() as session:
            await service.ingest_events(session, [(1, same)], now=clock.now())
            await session.commit()
        event.listen(engine.sync_engine, "before_cursor_execute", listener)
        try:
            async with maker() as session:
                await service.ingest_events(session, [(1, same)], now=clock.now())
                await session.commit()
            assert updates == []
            async with maker() as session:
                await service.ingest_events(session, [(1, changed)], now=clock.now())
                await session.commit()
            assert len(updates) == 1
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", listener)
        async with maker() as session:
            stored = await session.scalar(select(Entity.data).where(Entity.entity_id == "7"))
        assert stored == {"id": 7, "first_name": "Q"}
