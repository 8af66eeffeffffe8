"""Signing an httpx client in to the console, as a browser would: the sign-in form's CSRF
token, then the token; the session's CSRF token for the forms that follow."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, token: str) -> str:
    """Signs ``client`` in with ``token``; the session's CSRF token."""
    form = await client.get("/console/login")
    found = CSRF.search(form.text)
    assert found is not None
    answer = await client.post(
        "/console/login", data={"token": token, "csrf_token": found.group(1)}
    )
    assert answer.status_code == 303, answer.text
    page = await client.get("/console")
    session_csrf = CSRF.search(page.text)
    assert session_csrf is not None
    return session_csrf.group(1)
