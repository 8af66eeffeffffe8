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
- an SMS template has no subject (the path's channel decides): valid SMS templates send none;
- strings hold no NUL characters, which no database column can store (careflow refuses them
  with a 400 and says so in its error).
"""

from __future__ import annotations

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
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.config import Settings
from tests.conftest import make_settings
from tests.security.conftest import Auth, Drain, seed_world

schema = schemathesis.openapi.from_dict(
    create_app(make_settings("sqlite+aiosqlite:///:memory:"), migrate_sqlite=False).openapi()
)
schema.config.generation.update(allow_x00=False, codec="utf-8")

BUILT_IN_TEMPLATE = "welcome_patient"  # an email and an SMS template (templates/builtin.py)


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Valid requests follow the rules of data (see the module docstring)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    operation = case.operation.definition.raw.get("operationId")
    body = case.body
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if operation == "createAutomationRule" and isinstance(body, dict):
        for action in body.get("actions") or []:
            if isinstance(action, dict) and "template" in action:
                action["template"] = BUILT_IN_TEMPLATE
    sms = case.path_parameters and case.path_parameters.get("channel") == "sms"
    if operation == "putTemplate" and sms and isinstance(body, dict):
        body.pop("subject", None)


@pytest.fixture(scope="module")
def fuzzed_app(database_url: str, engine: AsyncEngine) -> Iterator[FastAPI]:
    """An app with its own engine (opened on schemathesis' loop) over the migrated database.

    ``engine`` is requested so the schema exists and every test starts from empty tables.
    """
    app = create_app(make_settings(database_url), migrate_sqlite=False)
    yield app
    asgi.shutdown_lifespans()


@pytest.fixture
async def seeded(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> None:
    """Real rows in every list, so their shapes are checked too (ids will rarely match)."""
    await seed_world(client, auth, drain, org=1)


@pytest.fixture
def admin_headers(settings: Settings, token: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('admin', 1)}"}


FUZZ_SETTINGS = settings(
    max_examples=20,
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
    case.call_and_validate(app=fuzzed_app, headers=admin_headers)


@pytest.mark.usefixtures("seeded")
def test_stateful_links(fuzzed_app: FastAPI, admin_headers: dict[str, str]) -> None:
    """Sequences along the document's links, every check on every answer."""
    machine = schema.as_state_machine()

    class Workflow(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"app": fuzzed_app, "headers": admin_headers}

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
