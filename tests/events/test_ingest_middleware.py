"""POST /v1/events before the router: the common request is answered there, any other goes
on to the route, and either way the client gets the route's own answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from careflow.app import create_app
from careflow.config import Settings
from careflow.db import create_engine, create_sessionmaker
from careflow.events.ingest_middleware import IngestMiddleware
from careflow.events.models import Event
from careflow.kit.clock import FrozenClock
from careflow.kit.metrics import REGISTRY

Auth = Callable[..., dict[str, str]]

EVENTS = "/v1/events"


def booked(event_id: str, patient: int = 42) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "appointment.booked",
        "data": {
            "appointment": {
                "id": f"a-{event_id}",
                "patient_id": patient,
                "starts_at": "2030-03-01T09:00:00Z",
            },
            "patient": {"id": patient, "first_name": "P"},
        },
    }


class Harness:
    """The fast path in front of a real careflow app, noting what reached the app."""

    def __init__(self, app: FastAPI, max_bytes: int) -> None:
        self.app = app
        self.reached: list[str] = []
        self.fast = IngestMiddleware(self._downstream, max_bytes=max_bytes)

    async def _downstream(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"])
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self.app  # as Starlette sets it before its middleware
        await self.fast(scope, receive, send)


@pytest.fixture
async def harness(app: FastAPI, settings: Settings) -> AsyncIterator[tuple[Harness, Any]]:
    harness = Harness(app, settings.max_body_bytes)
    transport = httpx.ASGITransport(app=harness, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://careflow.test") as c:
        yield harness, c


async def stored(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


class TestCommonPath:
    async def test_a_valid_event_is_answered_before_the_router(
        self, harness: tuple[Harness, httpx.AsyncClient], auth: Auth, engine: AsyncEngine
    ) -> None:
        fast, client = harness
        response = await client.post(EVENTS, json=booked("evt-1"), headers=auth("service"))
        assert response.status_code == 202
        data = response.json()["data"]
        assert data == {
            "id": data["id"],
            "event_id": "evt-1",
            "type": "appointment.booked",
            "status": "accepted",
        }
        assert fast.reached == []
        assert await stored(engine) == 1
        # A duplicate event_id is common too: the first event's record, 200.
        again = await client.post(EVENTS, json=booked("evt-1"), headers=auth("admin"))
        assert again.status_code == 200
        assert again.json() == response.json()
        assert fast.reached == []
        assert await stored(engine) == 1

    async def test_a_charset_parameter_still_takes_the_common_path(
        self, harness: tuple[Harness, httpx.AsyncClient], auth: Auth
    ) -> None:
        fast, client = harness
        headers = {**auth("service"), "Content-Type": "application/json; charset=utf-8"}
        response = await client.post(EVENTS, content=json.dumps(booked("evt-2")), headers=headers)
        assert response.status_code == 202
        assert fast.reached == []

    async def test_its_answer_is_the_routes_answer(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        # Through the whole app: the common path, and the route (a query string sends a
        # request there), give the same status, headers and body shape.
        common = await client.post(EVENTS, json=booked("evt-a"), headers=auth("service"))
        routed = await client.post(
            f"{EVENTS}?via=route", json=booked("evt-b"), headers=auth("service")
        )
        assert common.status_code == routed.status_code == 202
        for response in (common, routed):
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"].startswith("req_")
            assert set(response.json()["data"]) == {"id", "event_id", "type", "status"}
        assert routed.json()["data"]["id"] == common.json()["data"]["id"] + 1
        given = await client.post(
            EVENTS, json=booked("evt-c"), headers={**auth("service"), "X-Request-ID": "abc-1"}
        )
        assert given.headers["x-request-id"] == "abc-1"

    async def test_it_is_counted_under_the_route_template(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        labels = {"method": "POST", "route": EVENTS, "status": "202"}
        name = "careflow_http_request_duration_seconds_count"
        before = REGISTRY.get_sample_value(name, labels) or 0.0
        response = await client.post(EVENTS, json=booked("evt-m"), headers=auth("service"))
        assert response.status_code == 202
        assert REGISTRY.get_sample_value(name, labels) == before + 1


class TestInvalidEvent:
    @pytest.mark.parametrize("case", ["unknown type", "bad entity"])
    async def test_it_gets_the_routes_400_without_the_router(
        self,
        harness: tuple[Harness, httpx.AsyncClient],
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        case: str,
    ) -> None:
        fast, via_fast = harness
        headers = {**auth("service"), "Content-Type": "application/json"}
        body = booked(f"evt-{case.replace(' ', '-')}")
        if case == "unknown type":
            body["type"] = "appointment.exploded"
        else:
            body["data"]["patient"] = {"id": "x" * 500}

        answer = await via_fast.post(EVENTS, content=json.dumps(body), headers=headers)

        # Validated once, by the route's own accept_event, and answered here.
        assert fast.reached == []
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "validation_error"
        direct = await client.post(f"{EVENTS}?direct=1", content=json.dumps(body), headers=headers)
        assert answer.json() == direct.json()
        assert await stored(engine) == 0


class TestEverythingElseGoesToTheRoute:
    @pytest.mark.parametrize(
        ("case", "status", "code"),
        [
            ("no token", 401, "unauthorized"),
            ("basic scheme", 401, "unauthorized"),
            ("bad token", 401, "unauthorized"),
            ("specialist", 403, "forbidden"),
            ("not json", 400, "validation_error"),
            ("not an object", 400, "validation_error"),
            ("text/plain", None, None),
            ("query string", 202, None),
            ("idempotency key", 202, None),
        ],
    )
    async def test_the_route_answers(
        self,
        harness: tuple[Harness, httpx.AsyncClient],
        client: httpx.AsyncClient,
        auth: Auth,
        case: str,
        status: int | None,
        code: str | None,
    ) -> None:
        fast, via_fast = harness
        headers = {**auth("service"), "Content-Type": "application/json"}
        path = EVENTS
        body: Any = booked(f"evt-{case.replace(' ', '-')}")
        if case == "no token":
            del headers["Authorization"]
        elif case == "basic scheme":
            headers["Authorization"] = "Basic dXNlcjpwYXNz"
        elif case == "bad token":
            headers["Authorization"] = "Bearer not-a-jwt"
        elif case == "specialist":
            headers.update(auth("specialist"))
        elif case == "not json":
            body = b"{not json"
        elif case == "not an object":
            body = [1, 2]
        elif case == "text/plain":
            headers["Content-Type"] = "text/plain"
        elif case == "query string":
            path = f"{EVENTS}?source=backfill"
        elif case == "idempotency key":
            headers["Idempotency-Key"] = "key-1"
        content = body if isinstance(body, bytes) else json.dumps(body).encode()

        answer = await via_fast.post(path, content=content, headers=headers)
        assert fast.reached == [EVENTS]
        if status is not None:
            assert answer.status_code == status, answer.text
        if code is not None:
            assert answer.json()["error"]["code"] == code
        if status == 202 or code is not None:
            return
        # No fixed expectation: whatever the route says, with the body it was replayed.
        direct = await client.post(f"{EVENTS}?direct=1", content=content, headers=headers)
        assert (answer.status_code, answer.json()) == (direct.status_code, direct.json())

    async def test_a_body_over_the_cap_gets_the_routes_413(
        self, harness: tuple[Harness, httpx.AsyncClient], auth: Auth, settings: Settings
    ) -> None:
        fast, client = harness
        big = booked("evt-big")
        big["data"]["patient"]["notes"] = "x" * settings.max_body_bytes
        answer = await client.post(EVENTS, json=big, headers=auth("service"))
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "payload_too_large"
        assert fast.reached == [EVENTS]

    async def test_a_streamed_body_over_the_cap_is_replayed_to_the_413(
        self, harness: tuple[Harness, httpx.AsyncClient], auth: Auth, settings: Settings
    ) -> None:
        fast, client = harness
        chunk = b" " * 4096

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"type": "appointment.booked", "data": {}'
            for _ in range(settings.max_body_bytes // len(chunk) + 1):
                yield chunk
            yield b"}"

        headers = {**auth("service"), "Content-Type": "application/json"}
        answer = await client.post(EVENTS, content=chunks(), headers=headers)
        assert answer.status_code == 413
        assert fast.reached == [EVENTS]

    async def test_a_streamed_body_within_the_cap_takes_the_common_path(
        self, harness: tuple[Harness, httpx.AsyncClient], auth: Auth, engine: AsyncEngine
    ) -> None:
        fast, client = harness
        raw = json.dumps(booked("evt-stream")).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield raw[:10]
            yield raw[10:]

        headers = {**auth("service"), "Content-Type": "application/json"}
        answer = await client.post(EVENTS, content=chunks(), headers=headers)
        assert answer.status_code == 202
        assert fast.reached == []
        assert await stored(engine) == 1


class TestWriteFailure:
    async def test_a_failed_write_is_rendered_by_the_apps_handlers(
        self, settings: Settings, clock: FrozenClock, auth: Auth, tmp_path: Path
    ) -> None:
        # A database without careflow's tables: the write fails in the driver.
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        app = create_app(settings, engine=engine, clock=clock, migrate_sqlite=False)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                common = await client.post(EVENTS, json=booked("evt-x"), headers=auth("service"))
                routed = await client.post(
                    f"{EVENTS}?via=route", json=booked("evt-y"), headers=auth("service")
                )
        finally:
            await engine.dispose()
        assert common.status_code == routed.status_code == 503
        assert common.json() == routed.json()
        assert common.json()["error"]["code"] == "service_unavailable"
        assert common.headers["x-request-id"].startswith("req_")
