"""schemathesis against careflow's own OpenAPI document, in process, with an admin token.

Every operation gets generated requests (valid and invalid): none may answer 5xx, and every
answer must be one the document lists, with the documented content type and body shape. The
document is only worth publishing if it is honest, so this keeps it honest.

The schema is loaded from ``app.openapi()`` at import (it does not need a database); each
request goes to an app built on the test database. schemathesis runs ASGI apps on its own
event loop thread, so that app opens its own engine there, in its lifespan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.config import Settings
from tests.conftest import make_settings
from tests.security.conftest import Auth, Drain, seed_world

schema = schemathesis.openapi.from_dict(
    create_app(make_settings("sqlite+aiosqlite:///:memory:"), migrate_sqlite=False).openapi()
).exclude(path="/metrics")  # Prometheus text, not JSON: nothing to conform to.

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


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


@pytest.mark.usefixtures("seeded")
@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(
    case: Any, fuzzed_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(app=fuzzed_app, headers=admin_headers, checks=CHECKS)
