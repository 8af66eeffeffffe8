"""Dead jobs stay visible: GET /v1/jobs lists an organisation's jobs for operators."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.jobs.models import Job
from careflow.kit.clock import FrozenClock

Auth = Callable[..., dict[str, str]]


async def add(engine: AsyncEngine, clock: FrozenClock, *, org: int, status: str, kind: str) -> None:
    now = clock.now()
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(
            Job(
                kind=kind,
                payload={"execution_id": 1},
                organization_id=org,
                status=status,
                run_at=now,
                attempts=5 if status == "dead" else 0,
                max_attempts=5,
                last_error="RetryableJobError: SMTP connection timeout"
                if status == "dead"
                else None,
                created_at=now,
                updated_at=now + timedelta(seconds=1),
            )
        )


class TestJobsApi:
    async def test_dead_jobs_are_listed_with_their_last_error(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await add(engine, clock, org=1, status="dead", kind="run_action")
        await add(engine, clock, org=1, status="queued", kind="dispatch_event")
        await add(engine, clock, org=2, status="dead", kind="run_action")
        r = await client.get("/v1/jobs", params={"status": "dead"}, headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"]["total"] == 1
        [job] = body["data"]
        assert (job["kind"], job["attempts"], job["max_attempts"]) == ("run_action", 5, 5)
        assert job["last_error"].startswith("RetryableJobError")
        assert job["run_at"].endswith("Z")
        r = await client.get("/v1/jobs", params={"kind": "dispatch_event"}, headers=auth())
        assert [j["status"] for j in r.json()["data"]] == ["queued"]

    async def test_bad_status_is_400(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get("/v1/jobs", params={"status": "done"}, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_admins_only(self, client: httpx.AsyncClient, auth: Auth, role: str) -> None:
        assert (await client.get("/v1/jobs", headers=auth(role))).status_code == 403
