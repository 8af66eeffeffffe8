"""A job carries the request it came from: its log lines, and those of the jobs it enqueues,
carry that request's ``X-Request-ID`` (``jobs.request_id``, written in the job's INSERT)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.events.batcher import IngestBatcher
from careflow.events.schemas import EventIn
from careflow.jobs.models import Job
from careflow.kit.clock import FrozenClock
from careflow.kit.context import request_id_var
from tests.conftest import Drain
from tests.fixtures.factories import EVENTS, PATIENT, Auth, create_rule, onboarded
from tests.fixtures.smtp import SmtpServer


def log_lines(captured: str) -> list[dict[str, Any]]:
    """The JSON log lines written to stderr."""
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


async def post_onboarded(
    client: httpx.AsyncClient, auth: Auth, request_id: str, patient_id: int = 100
) -> None:
    patient = {**PATIENT, "id": patient_id}
    response = await client.post(
        EVENTS,
        json={"type": "patient.onboarded", "data": onboarded(patient)},
        headers={**auth("service"), "X-Request-ID": request_id},
    )
    assert response.status_code == 202, response.text


class TestRequestIdInJobLogs:
    async def test_every_line_of_the_work_an_event_caused_carries_its_request_id(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        smtp: SmtpServer,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        await create_rule(client, auth)
        smtp.sink.fail_next = 1  # the first send fails: the retry's lines too
        capsys.readouterr()

        await post_onboarded(client, auth, "req-origin-1")
        await drain()
        clock.advance(minutes=5)
        await drain()

        assert len(smtp.sink.messages) == 1
        lines = log_lines(capsys.readouterr().err)
        events = {line["event"] for line in lines}
        # The ingestion (written by the group commit's own task), the dispatch, the failed
        # step and its retry's outcome, the step that sent.
        assert {
            "event_ingested",
            "event_dispatched",
            "execution_started",
            "jobs.retried",
            "email_sent",
            "execution_finished",
        } <= events, events
        assert [line for line in lines if line.get("request_id") != "req-origin-1"] == []

    async def test_jobs_sharing_a_batch_keep_their_own_request_ids(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        await create_rule(client, auth)
        for n in range(3):
            await post_onboarded(client, auth, f"req-batch-{n}", patient_id=100 + n)
        capsys.readouterr()

        await drain()  # the three dispatches share one batch, then the three email steps

        lines = log_lines(capsys.readouterr().err)
        sent = [line for line in lines if line["event"] == "email_sent"]
        dispatched = {
            line["event_pk"]: line["request_id"]
            for line in lines
            if line["event"] == "event_dispatched"
        }
        assert len(sent) == 3
        assert sorted(line["request_id"] for line in sent) == [f"req-batch-{n}" for n in range(3)]
        assert sorted(dispatched.values()) == [f"req-batch-{n}" for n in range(3)]
        assert all("request_id" in line for line in lines), lines


class TestOriginInTheJobRow:
    async def test_a_group_commit_gives_each_dispatch_its_own_request(
        self,
        maker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        batcher = IngestBatcher(maker, clock)

        async def ingest(request_id: str, patient_id: int) -> None:
            request_id_var.set(request_id)  # as RequestIdMiddleware does, in its own task
            body = EventIn.model_validate(
                {"type": "patient.onboarded", "data": onboarded({**PATIENT, "id": patient_id})}
            )
            await batcher.ingest(1, body)

        # Both requests are queued before the drain task runs: one transaction for both.
        await asyncio.gather(ingest("req-a", 1), ingest("req-b", 2))

        async with engine.connect() as conn:
            rows = (await conn.execute(select(Job.payload, Job.request_id).order_by(Job.id))).all()
        assert [row.request_id for row in rows] == ["req-a", "req-b"]
        assert rows[0].payload["event_id"] < rows[1].payload["event_id"]

    async def test_an_idempotent_request_gives_its_dispatch_its_request_id(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        # Not the fast path nor the group commit: the route's own transaction.
        response = await client.post(
            EVENTS,
            json={"type": "patient.onboarded", "data": onboarded()},
            headers={**auth("service"), "X-Request-ID": "req-idem", "Idempotency-Key": "k-1"},
        )
        assert response.status_code == 202, response.text
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Job.kind, Job.request_id))).all()
        assert [tuple(row) for row in rows] == [("dispatch_event", "req-idem")]
