"""Signing an httpx client in to the console, for the tests that talk HTML over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, token: Callable[..., str], role: str = "admin",
                  org: int = 1) -> str:  # fmt: skip
    """Sign ``client`` in with a token of ``role``; the session's CSRF token."""
    login = await client.get("/console/login")
    found = CSRF.search(login.text)
    assert found is not None
    answer = await client.post(
        "/console/login", data={"token": token(role, org), "csrf_token": found.group(1)}
    )
    assert answer.status_code == 303, answer.text
    page = await client.get("/console/rules")
    session_csrf = CSRF.search(page.text)
    assert session_csrf is not None, page.text
    return session_csrf.group(1)
