"""Signing in to the console: with a token in a real browser, with a one-time link, and the
cookie, CSRF and redirect rules over plain HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from careflow.auth import Role
from careflow.console import service
from careflow.kit.clock import FrozenClock
from tests.console.conftest import LiveServer, Visit

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_sign_in_with_a_token_in_the_browser(visit: Visit, token: Callable[..., str]) -> None:
    await visit.goto("/console?from=link")
    # Without a session, every page sends the browser to the sign-in page.
    assert "/console/login" in visit.page.url
    await visit.screenshot("login")
    await visit.page.get_by_label("Token").fill(token("admin"))
    await visit.page.get_by_role("button", name="Sign in").click()
    await visit.page.wait_for_url(visit.server.at("/console?from=link"))
    cookies = {c["name"]: c for c in await visit.page.context.cookies()}
    session = cookies["careflow_console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/console"
    # It ends when the token does.
    assert session["expires"] > 0


async def test_a_refused_token_is_told_on_the_sign_in_page(
    visit: Visit, token: Callable[..., str]
) -> None:
    await visit.goto("/console/login")
    await visit.page.get_by_label("Token").fill(token("admin", exp=1))
    await visit.page.get_by_role("button", name="Sign in").click()
    alert = visit.page.get_by_role("alert")
    await alert.wait_for()
    assert "token expired" in (await alert.inner_text())
    assert "/console/login" in visit.page.url


async def login_form(client: httpx.AsyncClient) -> str:
    page = await client.get("/console/login")
    assert page.status_code == 200
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


async def test_pages_without_a_session_redirect_to_sign_in(client: httpx.AsyncClient) -> None:
    for path in ("/console", "/console?status=failed"):
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login?next=%2Fconsole")
    htmx = await client.get("/console", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"].startswith("/console/login")


async def test_sign_in_needs_the_forms_csrf_token(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    bare = await client.post("/console/login", data={"token": token("admin")})
    assert bare.status_code == 403
    csrf = await login_form(client)
    wrong = await client.post("/console/login", data={"token": token("admin"), "csrf_token": "x"})
    assert wrong.status_code == 403
    ok = await client.post("/console/login", data={"token": token("admin"), "csrf_token": csrf})
    assert ok.status_code == 303
    assert "careflow_console" in ok.cookies


async def test_signing_out_needs_the_sessions_csrf_token(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    csrf = await login_form(client)
    await client.post("/console/login", data={"token": token("admin"), "csrf_token": csrf})
    overview = await client.get("/console")
    assert overview.status_code == 200
    refused = await client.post("/console/logout")
    assert refused.status_code == 403
    session_csrf = CSRF.search(overview.text)
    assert session_csrf is not None
    out = await client.post("/console/logout", data={"csrf_token": session_csrf.group(1)})
    assert out.status_code == 303
    assert (await client.get("/console")).status_code == 303


async def test_a_sign_in_link_works_once(
    client: httpx.AsyncClient, app: FastAPI, clock: FrozenClock
) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        keys = await service.keys(session, clock.now(), None)
    ticket = service.mint_ticket(keys, org_id=3, role=Role.SPECIALIST, sub="ops", now=clock.now())
    first = await client.get("/console/login", params={"ticket": ticket})
    assert first.status_code == 303
    page = await client.get("/console")
    assert "Organisation 3" in page.text and "specialist" in page.text
    client.cookies.clear()
    again = await client.get("/console/login", params={"ticket": ticket})
    assert again.status_code == 401
    assert "used already" in again.text
    clock.advance(minutes=6)
    late = service.mint_ticket(
        keys, org_id=3, role=Role.ADMIN, sub="ops", now=datetime(2020, 1, 1, tzinfo=UTC)
    )
    assert (await client.get("/console/login", params={"ticket": late})).status_code == 401


async def test_sign_in_and_console_actions_are_audited(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Callable[..., dict[str, str]]
) -> None:
    csrf = await login_form(client)
    await client.post(
        "/console/login", data={"token": token("admin", sub="usr_9"), "csrf_token": csrf}
    )
    log = await client.get("/v1/audit-log", headers=auth("admin"))
    entries = [e for e in log.json()["data"] if e["action"] == "sign_in"]
    assert entries and entries[0]["actor_sub"] == "usr_9"
    assert entries[0]["after"] == {"method": "token", "via": "console"}


async def test_console_errors_are_pages_not_json(
    live_server: LiveServer, visit: Visit, signed_in: Callable[..., Any]
) -> None:
    await signed_in("admin")
    answer = await visit.goto("/console/no-such-page")
    assert answer.status == 404
    assert "text/html" in answer.headers["content-type"]


async def test_the_root_address_leads_to_the_console(client: httpx.AsyncClient) -> None:
    answer = await client.get("/")
    assert answer.status_code == 307
    assert answer.headers["location"] == "/console"
