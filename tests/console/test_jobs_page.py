"""/console/jobs: dead and retrying jobs with their last error; an admin retries a dead job
in the browser, or discards one; the specialist sees neither the page nor its writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.kit.clock import FrozenClock
from tests.conftest import Drain
from tests.console.conftest import Visit
from tests.console.jobrows import ERROR, add_job, jobs_of
from tests.console.signin import sign_in

Auth = Callable[..., dict[str, str]]


async def test_an_admin_retries_a_dead_job_from_the_jobs_page(
    signed_in: Callable[..., Any], engine: AsyncEngine, clock: FrozenClock, drain: Drain
) -> None:
    dead = await add_job(engine, clock.now())
    await add_job(engine, clock.now(), kind="run_action", status="queued", attempts=2,
                  run_at=clock.now() + timedelta(minutes=5))  # fmt: skip
    visit: Visit = await signed_in("admin")
    await visit.goto("/console/jobs")
    row = visit.page.locator(f"#job-{dead}")
    assert ERROR in await row.inner_text()
    await visit.screenshot("jobs")
    await visit.page.get_by_role("button", name=f"Retry job {dead}").click()
    await visit.page.locator("#done").wait_for()
    assert f"Job #{dead} queued again" in await visit.page.locator("#done").inner_text()
    assert await visit.page.locator(f"#job-{dead}").count() == 0
    assert (await jobs_of(engine))[dead] == ("queued", 0)
    # Due now: the worker runs it (a noop: done, so deleted).
    assert await drain() == 1
    assert dead not in await jobs_of(engine)
    await visit.goto("/console/audit?object_type=job")
    entries = visit.page.locator("tbody tr")
    assert await entries.count() == 1  # the retry's entry, saying it was made in the console
    assert "console" in await entries.first.inner_text()
    await visit.screenshot("audit")


async def test_retrying_jobs_are_listed_with_their_last_error(
    client: httpx.AsyncClient, token: Callable[..., str], engine: AsyncEngine, clock: FrozenClock
) -> None:
    retrying = await add_job(engine, clock.now(), status="queued", attempts=2, kind="run_action")
    fresh = await add_job(engine, clock.now(), status="queued", attempts=0, error=None)
    other_org = await add_job(engine, clock.now(), org=2, status="queued", attempts=1)
    await sign_in(client, token("admin"))
    page = await client.get("/console/jobs", params={"state": "retrying"})
    assert page.status_code == 200
    assert f'id="job-{retrying}"' in page.text and ERROR in page.text
    assert f'id="job-{fresh}"' not in page.text and f'id="job-{other_org}"' not in page.text
    # Only a dead job has the buttons.
    assert "Retry job" not in page.text
    filtered = await client.get("/console/jobs", params={"state": "retrying", "kind": "noop"})
    assert f'id="job-{retrying}"' not in filtered.text and 'id="no-jobs"' in filtered.text


async def test_discarding_a_dead_job_is_audited_once_saying_via_the_console(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    auth: Auth,
    engine: AsyncEngine,
    clock: FrozenClock,
) -> None:
    dead = await add_job(engine, clock.now(), kind="run_action")
    csrf = await sign_in(client, token("admin", sub="usr_ops"))
    answer = await client.post(
        f"/console/jobs/{dead}/discard", data={"csrf_token": csrf, "back": "state=dead&page=1"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/jobs?state=dead&page=1&done=discarded-{dead}"
    assert dead not in await jobs_of(engine)
    log = await client.get("/v1/audit-log", params={"object_type": "job"}, headers=auth())
    entries = {
        (e["action"], e["actor_sub"], (e["after"] or {}).get("via")) for e in log.json()["data"]
    }
    assert entries == {("delete", "usr_ops", "console")}
    page = await client.get(answer.headers["location"])
    assert f"Job #{dead} discarded" in page.text


async def test_a_job_that_is_not_dead_is_a_409_page(
    client: httpx.AsyncClient, token: Callable[..., str], engine: AsyncEngine, clock: FrozenClock
) -> None:
    queued = await add_job(engine, clock.now(), status="queued", attempts=1)
    csrf = await sign_in(client, token("admin"))
    for action in ("retry", "discard"):
        answer = await client.post(f"/console/jobs/{queued}/{action}", data={"csrf_token": csrf})
        assert answer.status_code == 409
        assert "text/html" in answer.headers["content-type"]
        assert "Only a dead job" in answer.text
    missing = await client.post("/console/jobs/999999/retry", data={"csrf_token": csrf})
    assert missing.status_code == 404
    assert await jobs_of(engine) == {queued: ("queued", 1)}


async def test_writes_need_the_csrf_token_and_htmx_gets_a_redirect(
    client: httpx.AsyncClient, token: Callable[..., str], engine: AsyncEngine, clock: FrozenClock
) -> None:
    dead = await add_job(engine, clock.now())
    csrf = await sign_in(client, token("admin"))
    assert (await client.post(f"/console/jobs/{dead}/retry")).status_code == 403
    wrong = await client.post(f"/console/jobs/{dead}/retry", data={"csrf_token": "nope"})
    assert wrong.status_code == 403
    assert (await jobs_of(engine))[dead] == ("dead", 5)
    htmx = await client.post(
        f"/console/jobs/{dead}/retry", headers={"HX-Request": "true", "X-CSRF-Token": csrf}
    )
    assert htmx.status_code == 200
    assert htmx.headers["HX-Redirect"] == f"/console/jobs?done=retried-{dead}"
    assert (await jobs_of(engine))[dead] == ("queued", 0)


async def test_a_specialist_sees_no_jobs_or_audit_and_cannot_write(
    client: httpx.AsyncClient, token: Callable[..., str], engine: AsyncEngine, clock: FrozenClock
) -> None:
    dead = await add_job(engine, clock.now())
    csrf = await sign_in(client, token("specialist"))
    overview = await client.get("/console")
    assert overview.status_code == 200
    assert 'href="/console/jobs"' not in overview.text
    assert 'href="/console/audit"' not in overview.text
    assert 'href="/console/inbox"' in overview.text
    for path in ("/console/jobs", "/console/audit"):
        page = await client.get(path)
        assert page.status_code == 403
        assert "text/html" in page.headers["content-type"]
    for action in ("retry", "discard"):
        answer = await client.post(f"/console/jobs/{dead}/{action}", data={"csrf_token": csrf})
        assert answer.status_code == 403
    assert (await jobs_of(engine))[dead] == ("dead", 5)
