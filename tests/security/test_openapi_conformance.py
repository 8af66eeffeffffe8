"""schemathesis against careflow's own OpenAPI document, in process, with an admin token.

Every operation gets generated requests, valid and invalid, under every check schemathesis
has: no 5xx; every answer one the document lists, with its content type, headers and body
shape; every schema-valid request accepted and every schema-violating one refused. Then the
stateful run follows the document's links (create a rule, then read, change and delete it;
ingest an event, then read it). The document is only worth publishing if it is honest, so
this keeps it honest.

The schema is loaded from ``app.openapi()`` at import (it does not need a database); each
request goes to an app built on the test database. schemathesis runs ASGI apps on its own
event loop thread, so that app opens its own engine there, in its lifespan.

Some rules are about data or about two parts of a request together, which a schema cannot
say, and the generated valid requests are shaped to them:

- a message action's ``template`` must name a template the organisation has (a valid key of
  an unknown template is a 400 at rule creation, SPEC §4): valid rules name a built-in one;
- an ``Idempotency-Key`` is one request's: a key reused with another body is the documented
  422, so every valid request gets a key of its own;
- an SMS template has a body and no subject or HTML, and an email template needs a subject
  and a body or an HTML body (the path's channel decides): valid templates follow their
  channel;
- a date range runs forward: valid execution filters do not end before they start;
- an entity's ``id`` in a ``PUT /v1/entities`` body, when given, is the path's: valid bodies
  leave it to the path;
- integers are written as integers: careflow does not read ``2.0`` as ``2``, though JSON
  Schema's ``integer`` admits it; valid bodies write ``2``;
- a patient's ``email`` is one address and ``timezone`` a known IANA zone (a schema says
  "string", not which): valid patients carry real ones;
- a condition's paths start with an entity the rule's trigger offers (which depends on the
  trigger, and entries at most 8 deep): valid conditions read the patient, which every
  trigger offers;
- strings hold no NUL characters, which no database column can store (careflow refuses them
  with a 400 and says so in its error).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.python import asgi
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from careflow.app import create_app
from careflow.config import Settings
from careflow.forms.models import Form, FormStatus
from tests.conftest import make_settings
from tests.security.conftest import Auth, Drain, seed_world

schema = schemathesis.openapi.from_dict(
    create_app(make_settings("sqlite+aiosqlite:///:memory:"), migrate_sqlite=False).openapi()
)
# Query parameters the document does not name are ignored, as HTTP APIs commonly do. The
# token is the test's (an admin's); the ``ignored_auth`` check still sends every operation
# without it and with a wrong one.
schema.config.generation.update(
    allow_x00=False,
    codec="utf-8",
    allow_extra_parameters=False,
    with_security_parameters=False,
)
# A body a violated maxLength makes larger than CAREFLOW_MAX_BODY_BYTES is refused with a
# 413 (documented on every operation that takes a body): a refusal like the others.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


class _FuzzedApp:
    """The ASGI app every request schemathesis makes goes to, its own probes included (a
    call without the token): the app the ``fuzzed_app`` fixture builds."""

    app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "requested outside the fuzzed_app fixture"
        await self.app(scope, receive, send)


TARGET = _FuzzedApp()
schema.app = TARGET
# Generated examples only, a bounded number per operation: the coverage phase adds hundreds
# of explicit cases per operation, minutes per run, more than CI's budget allows.
schema.config.phases.update(phases=["examples", "fuzzing", "stateful"])

BUILT_IN_TEMPLATE = "welcome_patient"  # an email and an SMS template (templates/builtin.py)


def _integers(value: Any) -> Any:
    """``value`` with every whole float (``2.0``) written as an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    return value


def _real_contacts(patient: dict[str, Any]) -> None:
    if isinstance(patient.get("email"), str):
        patient["email"] = "ada@example.com"
    if isinstance(patient.get("timezone"), str):
        patient["timezone"] = "Europe/London"


_COMBINATORS = ("all", "any", "not")


def _patient_paths(condition: Any, depth: int = 1) -> Any:
    """``condition`` with every path reading the patient, and no deeper than careflow takes."""
    if not isinstance(condition, dict):
        return condition
    out: dict[str, Any] = {}
    for key, value in condition.items():
        if key in ("all", "any") and isinstance(value, list):
            out[key] = [_patient_paths(c, depth + 1) for c in value] if depth < 8 else []
        elif key == "not" and isinstance(value, dict):
            out[key] = _patient_paths(value, depth + 1) if depth < 8 else {}
        elif key in _COMBINATORS:
            out[key] = value
        else:
            out["patient." + key.split(".", 1)[-1]] = value
    return out


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Valid requests follow the rules of data (see the module docstring)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    operation = case.operation.definition.raw.get("operationId")
    body = case.body = _integers(case.body)
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if isinstance(body, dict) and isinstance(body.get("conditions"), dict):
        body["conditions"] = _patient_paths(body["conditions"])
    if operation == "createAutomationRule" and isinstance(body, dict):
        for action in body.get("actions") or []:
            if isinstance(action, dict) and "template" in action:
                action["template"] = BUILT_IN_TEMPLATE
    channel = (case.path_parameters or {}).get("channel")
    if operation == "putTemplate" and isinstance(body, dict):
        if channel == "sms":
            body.pop("subject", None)
            body.pop("html_body", None)
            if not body.get("body"):
                body["body"] = "See you soon."
        else:
            if not body.get("subject"):
                body["subject"] = "Your appointment"
            if not body.get("body") and not body.get("html_body"):
                body["body"] = "See you soon."
    query = case.query or {}
    if operation == "listExecutions" and "from_date" in query and "to_date" in query:
        del query["to_date"]
    if operation in ("ingestEvent", "resolvePathway") and isinstance(body, dict):
        data = body.get("data")
        patient = data.get("patient") if isinstance(data, dict) else None
        if isinstance(patient, dict):
            _real_contacts(patient)
    if operation == "putEntity" and isinstance(body, dict):
        if case.path_parameters.get("entity_type") == "patient":
            _real_contacts(body)
        body.pop("id", None)


@pytest.fixture(scope="module")
def fuzzed_app(database_url: str, engine: AsyncEngine) -> Iterator[FastAPI]:
    """An app with its own engine (opened on schemathesis' loop) over the migrated database.

    ``engine`` is requested so the schema exists and every test starts from empty tables.
    """
    app = create_app(make_settings(database_url), migrate_sqlite=False)
    TARGET.app = app
    yield app
    TARGET.app = None
    asgi.shutdown_lifespans()


@pytest.fixture
async def seeded(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> None:
    """Real rows in every list, so their shapes are checked too (ids will rarely match)."""
    await seed_world(client, auth, drain, org=1)


@pytest.fixture
def admin_headers(settings: Settings, token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin', 1)}"}


FUZZ_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.usefixtures("seeded")
@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(
    case: Any, fuzzed_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(headers=admin_headers)


async def _reopen_forms(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(Form).values(status=FormStatus.PENDING, completed_at=None)
            )
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("seeded")
def test_stateful_links(
    fuzzed_app: FastAPI, admin_headers: dict[str, str], database_url: str
) -> None:
    """Sequences along the document's links, every check on every answer."""
    machine = schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            # Scenarios share the database, and hypothesis replays a scenario expecting the
            # same answers: the seeded form, which completes once (then 409), is reopened
            # so that completing it answers the same whichever scenarios ran before.
            asyncio.run(_reopen_forms(database_url))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": admin_headers}

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
