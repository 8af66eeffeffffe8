"""Fixtures of the conformance tests: one real ``careflow serve`` and the world it is given.

Contract: the fixtures here are session-scoped: the server runs from the first test of this
folder to the end of the run, since its time-based tests run last (``tests/conftest.py``). ``serve`` has a database of its own (a fresh SQLite file, or
``<test database>_conformance`` on PostgreSQL when CAREFLOW_TEST_DATABASE_URL is set), never
the one the in-process tests truncate. ``world`` builds, once and before any test, the seed's
rules and events in organisation 1, including the time-based ones, so the one-minute delayed
email and the one-hour-before reminder are on their way while the other tests run. Fixtures
that depend on the job worker poll a condition with a deadline and hand the tests what they
saw; the tests assert.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conformance.envelopes import body, data, poll
from tests.conformance.seed import (
    CALLERS,
    FAILING_MAILBOX,
    GDPR_RULE,
    VIDEO_RULE,
    WORLD,
    appointment_event,
    onboarded_event,
)
from tests.conformance.server import (
    Api,
    ConformanceSmtp,
    RefusingSink,
    Serve,
    fresh_postgres_database,
    new_workdir,
    running_serve,
    serve_database_url,
    serve_environment,
    sign_token,
)
from tests.conformance.world import (
    DEFAULT_REMINDER_RULE,
    DELAYED_RULE,
    PATHWAY_EXTRA_RULES,
    PATHWAY_SEED_KEY,
    PATHWAY_SEED_RULE,
    REMINDER_1H_RULE,
    SEGMENT_RULE,
    ExecutionsFor,
    PathwayWorld,
    WorkerResults,
    World,
)
from tests.fixtures.database import database_env


@pytest.fixture(scope="session")
def mail_server() -> Iterator[ConformanceSmtp]:
    server = ConformanceSmtp(refused={FAILING_MAILBOX})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_sink(mail_server: ConformanceSmtp) -> RefusingSink:
    """Every message the service sent; ``fail@example.com`` refused until a test allows it."""
    assert isinstance(mail_server.sink, RefusingSink)
    return mail_server.sink


@pytest.fixture(scope="session")
def serve_workdir() -> Iterator[Path]:
    workdir = new_workdir()
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_database(serve_workdir: Path) -> str:
    test_url = os.environ.get("CAREFLOW_TEST_DATABASE_URL") or None
    url = serve_database_url(test_url, serve_workdir)
    if test_url is not None:
        # A thread of its own: asyncio.run here would unset the suite's session event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, fresh_postgres_database(test_url, url)).result()
    return url


@pytest.fixture(scope="session")
def serve(
    serve_workdir: Path, serve_database: str, mail_server: ConformanceSmtp
) -> Iterator[Serve]:
    env = serve_environment(serve_database, mail_server.url)
    test_url = os.environ.get("CAREFLOW_TEST_DATABASE_URL")
    if test_url:
        env.update(database_env(test_url, database=make_url(serve_database).database))
    with running_serve(serve_workdir, env) as server:
        yield server


@pytest.fixture(scope="session")
def api(serve: Serve) -> Iterator[Api]:
    tokens = {(org, role): sign_token(org, role, sub) for org, role, sub in CALLERS}
    with httpx.Client(base_url=serve.base_url, timeout=15) as client:
        yield Api(client, tokens)


@pytest.fixture(scope="session")
def executions_for(api: Api) -> ExecutionsFor:
    """``executions_for(rule_id, org=1)``: the rule's executions, newest first (up to 100)."""

    def read(rule_id: Any, org: int = WORLD) -> list[dict[str, Any]]:
        r = api(
            "GET",
            "/v1/automations/executions",
            org=org,
            params={"automation_rule_id": rule_id, "limit": 100},
        )
        return list((body(r) or {}).get("data") or [])

    return read


# --- the world of organisation 1 ------------------------------------------------------------


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="session", autouse=True)
def world(api: Api, smtp_sink: RefusingSink, executions_for: ExecutionsFor) -> World:
    """The seed's rules and events in organisation 1, built before the first test."""
    w = World()
    rs = w.responses

    def post_rule(step: str, rule: dict[str, Any]) -> None:
        rs[step] = api("POST", "/v1/automations/rules", json=rule)

    def post_event(step: str, event: dict[str, Any]) -> None:
        rs[step] = api("POST", "/v1/events", role="service", json=event)

    post_rule("create_gdpr", GDPR_RULE)
    post_rule("create_video", VIDEO_RULE)
    post_rule("create_segment", SEGMENT_RULE)

    # A reminder one hour before an appointment that starts in one hour and six seconds; a
    # second appointment is cancelled before its reminder is due.
    post_rule("create_reminder_1h", REMINDER_1H_RULE)
    soon = datetime.now(UTC) + timedelta(hours=1, seconds=6)
    for step, event_id, appt, patient, addr in (
        ("post_reminded", "evt-rem", 80, 108, "remind@example.com"),
        ("post_cancelled_booking", "evt-can", 81, 109, "cancel@example.com"),
    ):
        event = appointment_event(event_id, appt, patient, addr, kind="in_person")
        event["data"]["appointment"]["starts_at"] = _z(soon)
        event["data"]["appointment"]["ends_at"] = _z(soon + timedelta(minutes=30))
        post_event(step, event)
    post_event(
        "post_cancellation",
        {
            "event_id": "evt-can-2",
            "type": "appointment.cancelled",
            "data": {"appointment": {"id": 81, "patient_id": 109, "status": "cancelled"}},
        },
    )

    post_rule("create_delayed", DELAYED_RULE)
    post_event("post_delayed", onboarded_event("evt-delay", 107, "delay@example.com"))
    w.delayed_posted_at = time.monotonic()
    post_rule("create_default_reminder", DEFAULT_REMINDER_RULE)

    post_event("post_onboarded", onboarded_event("evt-onb-100", 100, "ada@example.com"))
    post_event("post_onboarded_again", onboarded_event("evt-onb-100", 100, "ada@example.com"))
    post_event("post_appointment", appointment_event("evt-8c1f", 50, 100, "ada@example.com"))
    post_event(
        "post_string_ids", appointment_event("evt-str-1", "apt-x", "p-str", "bob@example.com")
    )
    post_event(
        "post_in_person",
        appointment_event("evt-inperson", 60, 102, "cy@example.com", kind="in_person"),
    )
    post_event("post_failing_mailbox", onboarded_event("evt-fail", 103, FAILING_MAILBOX))

    # What the delayed rule's execution looks like while its email waits out the minute.
    delayed_rule = w.id_of("create_delayed")

    def delayed_execution() -> dict[str, Any] | None:
        found = [x for x in executions_for(delayed_rule) if x.get("trigger_entity_id") == 107]
        return found[0] if found else None

    w.delayed_pending = poll(delayed_execution, 30) or {}
    w.delayed_sent_early = smtp_sink.count_to("delay@example.com")
    return w


@pytest.fixture(scope="session")
def worker_results(
    api: Api, world: World, smtp_sink: RefusingSink, executions_for: ExecutionsFor
) -> WorkerResults:
    """Waits for the worker: the GDPR forms, the video executions, the first emails."""

    def gdpr_ready() -> list[dict[str, Any]] | None:
        ex = [e for e in executions_for(world.rule_id) if e.get("trigger_entity_id") == 100]
        return ex if ex and len(ex[0].get("actions_executed") or []) >= 2 else None

    def video_ready() -> bool:
        ex = executions_for(world.video_rule_id)
        return len(ex) >= 3 and all(e["status"] != "running" for e in ex)

    gdpr = poll(gdpr_ready, 30) or []
    video = bool(poll(video_ready, 30))
    mail = bool(
        poll(
            lambda: (
                smtp_sink.count_to("ada@example.com") >= 1
                and smtp_sink.count_to("bob@example.com") >= 1
            ),
            30,
        )
    )
    return WorkerResults(gdpr, video, mail)


@pytest.fixture(scope="session")
def appointment_event_processed(api: Api, world: World) -> dict[str, Any]:
    """GET /v1/events/{id} of the SPEC §9 appointment.booked once processed ({} if not in time)."""
    pk = world.id_of("post_appointment") or 0

    def processed() -> dict[str, Any] | None:
        d = data(api("GET", f"/v1/events/{pk}"))
        return d if d.get("status") == "processed" else None

    return poll(processed, 15) or {}


# --- the pathway rules of organisation 1 ----------------------------------------------------


@pytest.fixture(scope="session")
def pathway_world(api: Api, world: World) -> PathwayWorld:
    """The seed's VIP rule and four more (two trigger types), then a VIP booking routed by them."""
    created = api(
        "POST",
        "/v1/pathway-rules",
        json=PATHWAY_SEED_RULE,
        headers={"Idempotency-Key": PATHWAY_SEED_KEY},
    )
    extras = [api("POST", "/v1/pathway-rules", json=x) for x in PATHWAY_EXTRA_RULES]
    vip = api(
        "POST",
        "/v1/events",
        role="service",
        # In person: the world's video rule skips it, so its execution count stays the seed's.
        json=appointment_event("evt-vip", 70, 106, "vip@example.com", kind="in_person"),
    )
    pk = data(vip).get("id") or 0

    def processed() -> dict[str, Any] | None:
        d = data(api("GET", f"/v1/events/{pk}"))
        return d if d.get("status") == "processed" else None

    return PathwayWorld(created, extras, vip, poll(processed, 15) or {})


@pytest.fixture(scope="session")
def world_ids(
    api: Api,
    world: World,
    worker_results: WorkerResults,
    pathway_world: PathwayWorld,
    appointment_event_processed: dict[str, Any],
) -> dict[str, Any]:
    """One object of each kind in organisation 1, for the access matrix's paths."""
    forms = (body(api("GET", "/v1/forms", params={"patient_id": 100})) or {}).get("data") or []
    messages = (body(api("GET", "/v1/messages")) or {}).get("data") or []
    episodes = (body(api("GET", "/v1/episodes")) or {}).get("data") or []
    gdpr = worker_results.gdpr_executions
    return {
        "rule_id": world.rule_id,
        "execution_id": gdpr[0]["id"] if gdpr else 1,
        "form_id": forms[0]["id"] if forms else 0,
        "pathway_rule_id": pathway_world.rule_id,
        "episode_id": appointment_event_processed.get("episode_id")
        or (episodes[0]["id"] if episodes else 0),
        "message_id": messages[0]["id"] if messages else 0,
    }
