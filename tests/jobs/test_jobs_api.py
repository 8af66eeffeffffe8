"""Dead jobs stay visible: GET /v1/jobs lists an organisation's jobs for operators, and an
admin queues a dead job again (POST /v1/jobs/{id}/retry) or deletes it (DELETE)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
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


async def job_ids(engine: AsyncEngine) -> dict[int, tuple[str, int]]:
    async with create_sessionmaker(engine)() as session:
        rows = await session.scalars(select(Job))
        return {j.id: (j.status, j.attempts) for j in rows}


async def only_id(engine: AsyncEngine, status: str, org: int = 1) -> int:
    async with create_sessionmaker(engine)() as session:
        found = await session.scalar(
            select(Job.id).where(Job.status == status, Job.organization_id == org)
        )
        assert found is not None
        return found


class TestRetryAndDelete:
    async def test_retry_queues_a_dead_job_due_now_with_attempts_reset(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
        drain: Callable[..., Any],
    ) -> None:
        await add(engine, clock, org=1, status="dead", kind="noop")
        job_id = await only_id(engine, "dead")
        clock.advance(minutes=10)
        r = await client.post(f"/v1/jobs/{job_id}/retry", headers=auth(sub="usr_ops"))
        assert r.status_code == 200, r.text
        job = r.json()["data"]
        assert (job["id"], job["status"], job["attempts"]) == (job_id, "queued", 0)
        assert job["last_error"] is None
        assert job["run_at"] == "2025-02-15T10:10:00Z"
        # Due now: the worker runs it (a noop succeeds, and done jobs are deleted).
        assert await drain() == 1
        assert job_id not in await job_ids(engine)
        log = (await client.get("/v1/audit-log", headers=auth())).json()["data"]
        [entry] = [e for e in log if e["object_type"] == "job"]
        assert (entry["action"], entry["object_id"], entry["actor_sub"]) == (
            "retry",
            str(job_id),
            "usr_ops",
        )
        assert entry["before"] == {"status": "dead", "attempts": 5}
        assert entry["after"] == {"status": "queued", "attempts": 0, "kind": "noop"}

    async def test_delete_removes_only_a_dead_job(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await add(engine, clock, org=1, status="dead", kind="run_action")
        await add(engine, clock, org=1, status="queued", kind="dispatch_event")
        dead, queued = await only_id(engine, "dead"), await only_id(engine, "queued")
        refused = await client.delete(f"/v1/jobs/{queued}", headers=auth())
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "job_not_dead"
        r = await client.delete(f"/v1/jobs/{dead}", headers=auth())
        assert r.status_code == 204
        assert r.content == b""
        assert list(await job_ids(engine)) == [queued]
        again = await client.delete(f"/v1/jobs/{dead}", headers=auth())
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "job_not_found"
        log = (await client.get("/v1/audit-log", headers=auth())).json()["data"]
        [entry] = [e for e in log if e["object_type"] == "job"]
        assert (entry["action"], entry["object_id"], entry["after"]) == ("delete", str(dead), None)
        assert entry["before"] == {"status": "dead", "attempts": 5, "kind": "run_action"}

    async def test_retry_of_a_job_that_is_not_dead_is_409(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await add(engine, clock, org=1, status="queued", kind="dispatch_event")
        queued = await only_id(engine, "queued")
        r = await client.post(f"/v1/jobs/{queued}/retry", headers=auth())
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "job_not_dead"
        assert await job_ids(engine) == {queued: ("queued", 0)}

    async def test_another_organisations_job_is_not_found(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        await add(engine, clock, org=2, status="dead", kind="run_action")
        theirs = await only_id(engine, "dead", org=2)
        for answer in (
            await client.post(f"/v1/jobs/{theirs}/retry", headers=auth()),
            await client.delete(f"/v1/jobs/{theirs}", headers=auth()),
            await client.post("/v1/jobs/abc/retry", headers=auth()),
        ):
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "job_not_found"
        assert await job_ids(engine) == {theirs: ("dead", 5)}

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_only_admins_retry_or_delete(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
        role: str,
    ) -> None:
        await add(engine, clock, org=1, status="dead", kind="run_action")
        dead = await only_id(engine, "dead")
        assert (await client.post(f"/v1/jobs/{dead}/retry", headers=auth(role))).status_code == 403
        assert (await client.delete(f"/v1/jobs/{dead}", headers=auth(role))).status_code == 403
        assert await job_ids(engine) == {dead: ("dead", 5)}
