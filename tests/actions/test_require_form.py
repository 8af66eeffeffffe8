from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.actions.registry import EXECUTORS
from careflow.forms.models import Form, FormStatus
from careflow.kit.clock import FrozenClock
from tests.actions.conftest import ContextFor
from tests.fixtures.factories import create_execution, create_form

CONFIG = {"type": "require_form", "form_template_id": 42, "blocking": True, "description": "GDPR"}
executor = EXECUTORS["require_form"]


async def count_forms(session: AsyncSession, **where: Any) -> int:
    query = select(func.count()).select_from(Form)
    for name, value in where.items():
        query = query.where(getattr(Form, name) == value)
    return int(await session.scalar(query) or 0)


class TestRequireForm:
    async def test_creates_a_pending_form_keyed_by_the_action(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            ctx = context_for(session, execution, CONFIG, action_index=1, patient={"id": 100})
            outcome = await executor.execute(ctx)
            await session.commit()
        assert outcome.status == "success"
        assert set(outcome.result) == {"form_id"}
        async with maker() as session:
            form = await session.get(Form, outcome.result["form_id"])
            assert form is not None
            assert (form.patient_id, form.form_template_id, form.blocking) == (100, 42, True)
            assert form.status == FormStatus.PENDING
            assert form.description == "GDPR"
            assert (form.execution_id, form.action_index) == (execution.id, 1)
            assert form.created_at == clock.now()

    async def test_rerun_of_the_same_action_finds_its_form(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            ctx = context_for(session, execution, CONFIG, patient={"id": 100})
            first = await executor.execute(ctx)
            await session.commit()
            # Even after the patient completed it, the action's own form is its result.
            await session.execute(
                text("UPDATE forms SET status = 'completed' WHERE id = :id"),
                {"id": first.result["form_id"]},
            )
            second = await executor.execute(ctx)
            await session.commit()
            assert second.status == "success"
            assert second.result == {"form_id": first.result["form_id"]}
            assert await count_forms(session) == 1

    async def test_never_a_second_pending_form_of_one_template(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            one = await create_execution(session, now=clock.now())
            two = await create_execution(session, now=clock.now())
            first = await executor.execute(context_for(session, one, CONFIG))
            second = await executor.execute(context_for(session, two, CONFIG))
            await session.commit()
            assert second.status == "success"
            assert second.result == {"form_id": first.result["form_id"], "reused": True}
            assert await count_forms(session, status=FormStatus.PENDING) == 1

    async def test_another_template_or_patient_gets_its_own_form(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            ids = set()
            for patient_id, template_id in ((100, 42), (100, 43), (101, 42)):
                execution = await create_execution(session, patient_id=patient_id, now=clock.now())
                config = {**CONFIG, "form_template_id": template_id}
                outcome = await executor.execute(context_for(session, execution, config))
                assert "reused" not in outcome.result
                ids.add(outcome.result["form_id"])
            assert len(ids) == 3

    async def test_a_completed_form_does_not_stop_a_new_one(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            done = await create_form(session, now=clock.now(), status=FormStatus.COMPLETED)
            execution = await create_execution(session, now=clock.now())
            outcome = await executor.execute(context_for(session, execution, CONFIG))
            assert outcome.status == "success"
            assert outcome.result["form_id"] != done.id

    async def test_pending_form_of_another_organisation_is_not_reused(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            theirs = await create_form(session, org=2, now=clock.now())
            execution = await create_execution(session, now=clock.now())
            outcome = await executor.execute(context_for(session, execution, CONFIG))
            assert outcome.result["form_id"] != theirs.id
            assert "reused" not in outcome.result

    async def test_no_patient_is_skipped(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, patient_id=None, now=clock.now())
            outcome = await executor.execute(context_for(session, execution, CONFIG))
            assert (outcome.status, outcome.reason) == ("skipped", "no patient")
            assert await count_forms(session) == 0

    async def test_preview_reports_an_existing_pending_form(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        async with maker() as session:
            context = {"patient": {"id": 100}}
            before = await executor.preview(session, 1, CONFIG, context)
            assert before == {"form_template_id": 42, "blocking": True, "would_create_form": True}
            await create_form(session, patient_id=100, now=clock.now())
            after = await executor.preview(session, 1, CONFIG, context)
            assert after["would_create_form"] is False
            # Preview writes nothing.
            assert await count_forms(session) == 1


class TestRequireFormConcurrency:
    async def test_two_executions_racing_open_one_pending_form(
        self,
        engine: AsyncEngine,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("SQLite has a single writer: the race needs PostgreSQL")
        async with maker() as setup:
            one = await create_execution(setup, now=clock.now())
            two = await create_execution(setup, now=clock.now())
            await setup.commit()
        async with maker() as first, maker() as second, maker() as observer:
            won = await executor.execute(context_for(first, one, CONFIG))
            # The second sees no pending form yet (uncommitted), so it inserts and waits on
            # the partial unique index until the first transaction ends.
            racing = asyncio.create_task(
                executor.execute(context_for(second, two, CONFIG))
            )
            for _ in range(1000):
                waiting = await observer.scalar(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                )
                await observer.rollback()
                if waiting or racing.done():
                    break
            assert waiting, "the second insert never waited on the first"
            await first.commit()
            lost = await racing
            await second.commit()

        assert lost.status == "success"
        assert lost.result == {"form_id": won.result["form_id"], "reused": True}
        async with maker() as session:
            assert await count_forms(session, status=FormStatus.PENDING) == 1
