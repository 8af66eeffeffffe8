"""Signing an httpx client in to the console, as a browser would: the sign-in form's CSRF
token, then the token; the session's CSRF token for the forms that follow."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(
    client: httpx.AsyncClient,
    token: str | Callable[..., str],
    role: str = "admin",
    org: int = 1,
) -> str:
    """Signs ``client`` in with ``token`` (or a token of ``role`` from the ``token``
    fixture); the session's CSRF token."""
    value = token if isinstance(token, str) else token(role, org)
    form = await client.get("/console/login")
    found = CSRF.search(form.text)
    assert found is not None
    answer = await client.post("/console/login", data={"token": value, "csrf_token": found.group(1)})
    assert answer.status_code == 303, answer.text
    page = await client.get("/console")  # every page's header carries the sign-out form
    session_csrf = CSRF.search(page.text)
    assert session_csrf is not None, page.text
    return session_csrf.group(1)
