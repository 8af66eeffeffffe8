"""The console's fixtures: the app served over real HTTP (uvicorn, in the tests' event
loop) and a real Chromium driven by Playwright.

The browser is Debian's ``chromium`` (``CAREFLOW_CHROMIUM``, default ``/usr/bin/chromium``),
launched by ``executable_path``; ``playwright install`` is never run. Without a browser the
browser tests are skipped with the reason, unless ``CAREFLOW_BROWSER_TESTS=required`` (CI),
where they fail. ``CAREFLOW_CONSOLE_SCREENSHOTS=docs/console`` saves the pages' screenshots
docs/console.md shows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI

CHROMIUM = os.environ.get("CAREFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
REQUIRED = os.environ.get("CAREFLOW_BROWSER_TESTS") == "required"
SCREENSHOTS = os.environ.get("CAREFLOW_CONSOLE_SCREENSHOTS")
if SCREENSHOTS:
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
VIEWPORT = {"width": 1280, "height": 860}


@dataclass
class LiveServer:
    url: str
    app: FastAPI

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture
async def live_server(app: FastAPI) -> AsyncIterator[LiveServer]:
    """``app`` (the suite's: test database, frozen clock) on a real port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # As root (CI), Chromium's sandbox cannot start.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Visit:
    """A browser page on the live server, recording every request it made."""

    page: Any
    server: LiveServer
    requests: list[str] = field(default_factory=list)

    async def goto(self, path: str) -> Any:
        return await self.page.goto(self.server.at(path))

    def foreign_requests(self) -> list[str]:
        """Requests to any origin other than careflow's own (should be none)."""
        own = urlsplit(self.server.url)
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "about", "blob")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    async def screenshot(self, name: str) -> None:
        """Saved for docs/console.md when CAREFLOW_CONSOLE_SCREENSHOTS names a folder."""
        if SCREENSHOTS:
            await self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)

    async def sign_in(self, token: str) -> None:
        await self.goto("/console/login")
        await self.page.get_by_label("Token").fill(token)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(self.server.at("/console") + "*")


@pytest.fixture
async def visit(browser: Any, live_server: LiveServer) -> AsyncIterator[Visit]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    seen = Visit(page=page, server=live_server)
    page.on("request", lambda request: seen.requests.append(request.url))
    try:
        yield seen
    finally:
        assert seen.foreign_requests() == [], "the console asked another origin"
        await context.close()


@pytest.fixture
def signed_in(visit: Visit, token: Callable[..., str]) -> Callable[..., Any]:
    """``await signed_in("specialist")``: the visit, signed in with that role's token."""

    async def sign_in(role: str = "admin", org: int = 1, sub: str = "usr_1") -> Visit:
        await visit.sign_in(token(role, org, sub))
        return visit

    return sign_in
