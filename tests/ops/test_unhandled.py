"""An unhandled error: the 500 envelope, one structured log line of ids, nothing of its text."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.config import Settings
from careflow.kit.clock import FrozenClock

CANARY = "jane.canary@example.com +447700900123"


async def test_an_unhandled_error_is_answered_and_not_logged_with_its_text(
    settings: Settings,
    engine: AsyncEngine,
    clock: FrozenClock,
    capfd: pytest.CaptureFixture[str],
) -> None:
    app = create_app(settings, engine=engine, clock=clock, migrate_sqlite=False)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError(f"could not handle {CANARY}")

    # raise_app_exceptions=True: what the server would have been handed (and logged).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://careflow.test") as c:
        r = await c.get("/v1/boom", headers={"X-Request-ID": "req-boom-1"})
    assert r.status_code == 500
    assert r.json()["error"] == {
        "code": "internal_error",
        "message": "Internal server error",
        "details": [],
    }
    assert r.headers["x-request-id"] == "req-boom-1"
    out, err = capfd.readouterr()
    assert CANARY.split()[0] not in out + err
    assert "unhandled_error" in out + err
    assert "req-boom-1" in out + err
    assert "test_unhandled.py:" in out + err  # where it was raised, for the operator
