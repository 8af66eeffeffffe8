"""/console/audit (admin): the organisation's audit entries, newest first, with the filters
of GET /v1/audit-log."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.kit.clock import FrozenClock
from tests.console.jobrows import add_job
from tests.console.signin import sign_in

Auth = Callable[..., dict[str, str]]


def rows(html: str) -> int:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return body.count("<tr>")


async def test_the_apis_filters_narrow_the_log(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    auth: Auth,
    engine: AsyncEngine,
    clock: FrozenClock,
) -> None:
    first = await add_job(engine, clock.now())
    second = await add_job(engine, clock.now())
    await client.post(f"/v1/jobs/{first}/retry", headers=auth(sub="usr_a"))
    clock.advance(hours=1)
    await client.delete(f"/v1/jobs/{second}", headers=auth(sub="usr_b"))
    await add_job(engine, clock.now(), org=2)
    await sign_in(client, token("admin", sub="usr_c"))  # a sign_in entry
    everything = await client.get("/console/audit")
    assert everything.status_code == 200
    assert rows(everything.text) == 3
    jobs = await client.get("/console/audit", params={"object_type": "job"})
    assert rows(jobs.text) == 2 and 'href="/console/jobs"' in jobs.text
    by_actor = await client.get("/console/audit", params={"actor": "usr_b"})
    assert rows(by_actor.text) == 1 and "delete" in by_actor.text
    one = await client.get("/console/audit", params={"object_type": "job", "object_id": first})
    assert rows(one.text) == 1 and "retry" in one.text
    # A time without an offset is read as UTC, as the API reads it.
    early = await client.get("/console/audit", params={"to": "2025-02-15T10:30"})
    assert rows(early.text) == 1 and "usr_a" in early.text
    late = await client.get("/console/audit", params={"from": "2025-02-15T10:30:00Z"})
    assert rows(late.text) == 2 and "usr_a" not in late.text
    assert 'value="2025-02-15T10:30:00Z"' in late.text


async def test_a_time_that_is_not_iso_8601_is_shown_beside_its_field(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    await sign_in(client, token("admin"))
    page = await client.get("/console/audit", params={"from": "yesterday"})
    assert page.status_code == 400
    assert 'id="from-error"' in page.text and "ISO 8601" in page.text
    assert 'aria-describedby="from-error"' in page.text


async def test_only_an_admin_reads_the_log(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    for role in ("specialist", "support"):
        client.cookies.clear()
        await sign_in(client, token(role))
        page = await client.get("/console/audit")
        assert page.status_code == 403
        assert "Not allowed" in page.text
