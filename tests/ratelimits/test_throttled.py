"""Rate limits on running workers: a limit shared by two workers, ``throttled`` on the
execution while a step waits, and a provider's own "slow down" (Twilio's 429, SMTP 421 or
451) that slows careflow without failing a message or counting an attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.executions.models import ExecutionAction
from careflow.jobs.models import Job
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock, isoformat_z
from careflow.messages.models import Message
from careflow.ratelimits.models import RateLimitBucket
from careflow.ratelimits.service import CHANNEL_LIMITS, ORGANIZATION_LIMIT
from tests.conftest import make_settings
from tests.fixtures.database import count
from tests.fixtures.factories import (
    EXECUTIONS,
    PATIENT,
    WELCOME_RULE,
    create_rule,
    onboarded,
    post_event,
)
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.twilio import TwilioFake

Auth = Callable[..., dict[str, str]]
SETTINGS_URL = "/v1/organization/settings"
SMS_RULE: dict[str, Any] = {
    "name": "Text new patients",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "send_sms", "template": "welcome_patient"}],
}


def _worker(app: FastAPI, settings: Settings, clock: FrozenClock, name: str) -> Worker:
    return Worker(app.state.sessionmaker, settings, clock, services=app.state.services, name=name)


async def _onboard(client: httpx.AsyncClient, auth: Auth, n: int, start: int = 900) -> None:
    for i in range(n):
        patient = {
            **PATIENT,
            "id": start + i,
            "email": f"patient{i}@example.com",
            "phone": f"+4477009001{i:02d}",
        }
        await post_event(client, auth, "patient.onboarded", onboarded(patient))


async def _run_due(worker: Worker) -> int:
    """Every job due now, in batches as a running worker claims them."""
    ran = 0
    while claimed := await worker.claim(100):
        await worker.run_batch(claimed)
        ran += len(claimed)
    return ran


async def _actions(client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
    """The first action of every execution, as GET /v1/automations/executions/{id} shows."""
    listed = (await client.get(EXECUTIONS, headers=auth())).json()["data"]
    shown = []
    for execution in sorted(listed, key=lambda e: e["id"]):
        one = (await client.get(f"{EXECUTIONS}/{execution['id']}", headers=auth())).json()
        shown.append({"execution": one["data"]["status"], **one["data"]["actions_executed"][0]})
    return shown


async def _limit(client: httpx.AsyncClient, auth: Auth, per_second: float) -> None:
    r = await client.put(SETTINGS_URL, json={"actions_per_second": per_second}, headers=auth())
    assert r.status_code == 200, r.text


class TestOrganizationLimit:
    async def test_two_workers_share_one_limit(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        smtp: SmtpServer,
        engine: AsyncEngine,
    ) -> None:
        await _limit(client, auth, 2)  # two a second, a burst of two
        await create_rule(client, auth, WELCOME_RULE)
        await _onboard(client, auth, 10)
        first, second = _worker(app, settings, clock, "a"), _worker(app, settings, clock, "b")
        start = clock.now()

        await _run_due(first)  # the dispatches, then the ten steps in one batch
        assert len(smtp.sink.messages) == 2
        for turn in range(12):
            clock.advance(seconds=0.5)
            await _run_due(second if turn % 2 == 0 else first)
            elapsed = (clock.now() - start).total_seconds()
            # Never more than the burst and the rate since: whichever worker ran.
            assert len(smtp.sink.messages) <= 2 + 2 * elapsed
        assert len(smtp.sink.messages) == 10
        actions = await _actions(client, auth)
        assert {(a["execution"], a["status"], a["attempts"]) for a in actions} == {
            ("success", "success", 1)
        }

    async def test_a_held_step_shows_throttled_until_it_runs(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        smtp: SmtpServer,
        drain: Callable[..., Any],
    ) -> None:
        await _limit(client, auth, 1)
        await create_rule(client, auth, WELCOME_RULE)
        await _onboard(client, auth, 3)
        await _run_due(_worker(app, settings, clock, "a"))

        actions = await _actions(client, auth)
        assert [a["status"] for a in actions] == ["success", "throttled", "throttled"]
        waiting = actions[1:]
        assert all(a["execution"] == "running" for a in waiting)
        assert all(a["reason"] == ORGANIZATION_LIMIT for a in waiting)
        # One a second: the second step's token comes in a second, the third's in two.
        assert [a["throttled_until"] for a in waiting] == [
            isoformat_z(clock.now() + timedelta(seconds=s)) for s in (1, 2)
        ]
        assert all("error" not in a for a in waiting)

        for _ in range(2):  # a worker runs each step as its token comes
            clock.advance(seconds=1)
            await drain()
        actions = await _actions(client, auth)
        assert [(a["execution"], a["status"]) for a in actions] == [("success", "success")] * 3
        assert all("throttled_until" not in a for a in actions)
        assert len(smtp.sink.messages) == 3

    async def test_a_batch_takes_its_tokens_in_one_statement_and_no_limit_takes_none(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        smtp: SmtpServer,
        engine: AsyncEngine,
    ) -> None:
        await create_rule(client, auth, WELCOME_RULE)
        await _onboard(client, auth, 4)
        await _onboard(client, auth, 4, start=950)
        worker = _worker(app, settings, clock, "a")
        await worker.run_batch(await worker.claim(100))  # the dispatches
        statements: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(" ".join(statement.split()).upper())

        event.listen(engine.sync_engine, "before_cursor_execute", listener)
        try:
            sends = await worker.claim(4)
            await worker.run_batch(sends)  # no limit: no bucket
            assert not any("RATE_LIMIT_BUCKETS" in s for s in statements)
            await _limit(client, auth, 100)
            app.state.services.pop("rate_limits", None)  # the next batch reads the new limit
            statements.clear()
            sends = await worker.claim(4)
            await worker.run_batch(sends)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", listener)
        assert len([s for s in statements if "RATE_LIMIT_BUCKETS" in s]) == 1
        assert len(smtp.sink.messages) == 8
        async with create_sessionmaker(engine)() as session:
            [bucket] = list(await session.scalars(select(RateLimitBucket)))
        assert (bucket.key, bucket.taken) == ("org:1", 4)

    async def test_an_organisation_without_a_limit_is_not_held_by_anothers(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        smtp: SmtpServer,
    ) -> None:
        await _limit(client, auth, 1)
        for org in (1, 2):
            await create_rule(client, auth, WELCOME_RULE, org=org)
            for i in range(3):
                patient = {**PATIENT, "id": 300 + i, "email": f"p{org}-{i}@example.com"}
                await post_event(client, auth, "patient.onboarded", onboarded(patient), org=org)
        await _run_due(_worker(app, settings, clock, "a"))
        sent = sorted(m.rcpt_tos[0] for m in smtp.sink.messages)
        assert sent == [
            "p1-0@example.com",
            "p2-0@example.com",
            "p2-1@example.com",
            "p2-2@example.com",
        ]


@pytest.fixture
def sms_settings(database_url: str, twilio: TwilioFake) -> Settings:
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid="AC123",
        twilio_auth_token="secret-token",
        twilio_from="+15550001111",
        twilio_base_url=twilio.base_url,
        sms_per_second=10,
    )


class TestTwilioRateLimit:
    @pytest.fixture
    def settings(self, sms_settings: Settings) -> Settings:
        return sms_settings

    async def test_a_429_slows_the_sends_without_failing_them(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        twilio: TwilioFake,
        engine: AsyncEngine,
    ) -> None:
        await create_rule(client, auth, SMS_RULE)
        await _onboard(client, auth, 1)
        twilio.throttle_next, twilio.retry_after = 1, "3"
        worker = _worker(app, settings, clock, "a")
        await worker.run_until_idle()  # one job at a time

        [action] = await _actions(client, auth)
        assert (action["status"], action["execution"]) == ("throttled", "running")
        assert action["throttled_until"] == isoformat_z(clock.now() + timedelta(seconds=3))
        assert "429" in action["reason"] and "20429" in action["reason"]
        assert twilio.throttled == 1 and twilio.requests == []
        assert await count(engine, Message) == 0  # nothing was made at Twilio

        # The provider's bucket waits as long as Twilio asked: a step due meanwhile is held
        # by careflow, not sent to be refused again.
        await _onboard(client, auth, 1, start=990)
        clock.advance(seconds=1)
        await worker.run_until_idle()
        assert twilio.throttled == 1 and twilio.requests == []
        later = (await _actions(client, auth))[1]
        assert (later["status"], later["reason"]) == ("throttled", CHANNEL_LIMITS["sms"])

        clock.advance(seconds=5)
        await worker.run_until_idle()
        actions = await _actions(client, auth)
        assert [(a["execution"], a["status"], a["attempts"]) for a in actions] == [
            ("success", "success", 1)
        ] * 2
        assert len(twilio.requests) == 2
        async with create_sessionmaker(engine)() as session:
            attempts = list(await session.scalars(select(Message.attempts)))
            jobs = list(await session.scalars(select(Job)))
        assert attempts == [1, 1] and jobs == []

    async def test_without_a_retry_after_the_step_waits_the_providers_backoff(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        settings: Settings,
        clock: FrozenClock,
        twilio: TwilioFake,
    ) -> None:
        await create_rule(client, auth, SMS_RULE)
        await _onboard(client, auth, 1)
        twilio.throttle_next = 1
        await _worker(app, settings, clock, "a").run_until_idle()
        [action] = await _actions(client, auth)
        backoff = timedelta(seconds=settings.provider_backoff_seconds)
        assert (action["status"], action["throttled_until"]) == (
            "throttled",
            isoformat_z(clock.now() + backoff),
        )


class TestSmtpRateLimit:
    @pytest.mark.parametrize(
        "reply", ["421 4.7.0 Too many messages, closing", "451 4.7.1 Rate limit exceeded"]
    )
    async def test_a_slow_down_answer_defers_the_email_and_empties_the_relays_bucket(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        app: FastAPI,
        database_url: str,
        smtp: SmtpServer,
        clock: FrozenClock,
        engine: AsyncEngine,
        reply: str,
    ) -> None:
        settings = make_settings(database_url, smtp_url=smtp.url, email_per_second=5)
        await create_rule(client, auth, WELCOME_RULE)
        await _onboard(client, auth, 1)
        smtp.sink.throttle_next, smtp.sink.throttle_reply = 1, reply
        worker = _worker(app, settings, clock, "a")
        await worker.run_until_idle()

        [action] = await _actions(client, auth)
        code = reply[:3]
        assert (action["status"], action["reason"]) == (
            "throttled",
            f"SMTP server: slow down ({code})",
        )
        assert action["throttled_until"] == isoformat_z(
            clock.now() + timedelta(seconds=settings.provider_backoff_seconds)
        )
        assert await count(engine, ExecutionAction, ExecutionAction.status == "failure") == 0
        async with create_sessionmaker(engine)() as session:
            [bucket] = list(await session.scalars(select(RateLimitBucket)))
        assert bucket.key == f"email:127.0.0.1:{smtp.port}" and bucket.tokens < 0

        clock.advance(seconds=settings.provider_backoff_seconds)
        await worker.run_until_idle()
        [action] = await _actions(client, auth)
        assert (action["execution"], action["status"], action["attempts"]) == (
            "success",
            "success",
            1,
        )
        assert len(smtp.sink.messages) == 1
