"""/console: the queue's depth and lag, executions and messages of the last 24 hours by
status, and the failed executions and dead jobs that need attention, for the organisation."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.kit.clock import FrozenClock
from tests.conftest import Drain
from tests.console.conftest import Visit
from tests.console.jobrows import add_job
from tests.console.signin import sign_in
from tests.fixtures.factories import PATIENT, create_rule, onboarded, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]


def figure(html: str, status: str) -> int:
    found = re.search(rf'<dd class="stat" data-status="{status}">(\d+)</dd>', html)
    assert found is not None, status
    return int(found.group(1))


def figures(html: str, section: str) -> dict[str, int]:
    """The counts of one section ("Executions…", "Messages…") of the overview."""
    start = html.index(section)
    part = html[start : html.index("</section>", start)]
    found = re.findall(r'data-status="([a-z_]+)">(\d+)</dd>', part)
    return {status: int(count) for status, count in found}


async def onboard(client: httpx.AsyncClient, auth: Auth, patient_id: int, org: int = 1) -> None:
    await post_event(
        client, auth, "patient.onboarded", onboarded({**PATIENT, "id": patient_id}), org=org
    )


async def test_signing_in_shows_the_figures_after_events_were_processed(
    signed_in: Callable[..., Any],
    client: httpx.AsyncClient,
    auth: Auth,
    drain: Drain,
    smtp: SmtpServer,
    engine: AsyncEngine,
    clock: FrozenClock,
) -> None:
    await create_rule(client, auth)
    await onboard(client, auth, 100)
    await onboard(client, auth, 101)
    await drain()
    # The SMTP server refuses every try: the third patient's email fails for good.
    smtp.sink.fail_next = 100
    await onboard(client, auth, 102)
    await drain(until_settled=True)
    smtp.sink.fail_next = 0
    dead = await add_job(engine, clock.now(), kind="run_action")
    await add_job(engine, clock.now() - timedelta(minutes=3), status="queued", attempts=0,
                  error=None, run_at=clock.now() - timedelta(minutes=3))  # fmt: skip
    visit: Visit = await signed_in("admin")
    await visit.goto("/console")
    page = visit.page
    assert await page.locator("#queue-due").inner_text() == "1"
    assert await page.locator("#queue-lag").inner_text() == "3 min 0 s"
    executions = page.get_by_role("region", name="Executions in the last 24 hours")
    assert await executions.locator('[data-status="success"]').inner_text() == "2"
    assert await executions.locator('[data-status="failure"]').inner_text() == "1"
    messages = page.get_by_role("region", name="Messages in the last 24 hours")
    assert await messages.locator('[data-status="sent"]').inner_text() == "2"
    assert await messages.locator('[data-status="failed"]').inner_text() == "1"
    attention = page.get_by_role("region", name="Needs attention")
    assert await attention.get_by_role("link", name="102").count() == 1  # the patient
    await attention.get_by_role("link", name=f"#{dead}").wait_for()
    await visit.screenshot("overview")


async def test_figures_are_the_organisations_and_the_last_24_hours(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    auth: Auth,
    drain: Drain,
    engine: AsyncEngine,
    clock: FrozenClock,
) -> None:
    await create_rule(client, auth)
    await create_rule(client, auth, org=2)
    await onboard(client, auth, 100)
    await drain()
    clock.advance(hours=25)
    await onboard(client, auth, 101)
    await onboard(client, auth, 102, org=2)
    await drain()
    await add_job(engine, clock.now(), org=2)
    await add_job(engine, clock.now(), org=2, status="queued", attempts=0, error=None)
    await sign_in(client, token("admin"))
    html = (await client.get("/console")).text
    assert figures(html, "Executions in the last 24 hours") == {
        "running": 0, "success": 1, "partial_failure": 0, "failure": 0, "skipped": 0,
    }  # fmt: skip
    assert figure(html, "sent") == 1
    assert 'id="queue-due">0<' in html and 'id="no-dead"' in html
    assert 'id="no-failed"' in html
    assert "none due" in html
    assert '<a href="/console/executions?status=success">success</a>' in html


async def test_a_specialist_sees_the_figures_but_no_jobs(
    client: httpx.AsyncClient, token: Callable[..., str], engine: AsyncEngine, clock: FrozenClock
) -> None:
    dead = await add_job(engine, clock.now())
    await sign_in(client, token("specialist"))
    html = (await client.get("/console")).text
    assert 'id="queue-dead">1<' in html  # a count, not a link to a page it may not open
    assert f"#{dead}" not in html and "/console/jobs" not in html
