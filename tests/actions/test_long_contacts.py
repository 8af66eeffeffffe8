"""A contact no provider takes and the message log cannot hold fails once, with its reason.

On PostgreSQL such an address used to fail the message row's insert: the action crashed,
was retried to its last attempt, and recorded only "unexpected error".
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.executions.models import Execution, ExecutionAction
from careflow.messages.models import Message
from tests.conftest import Drain
from tests.fixtures.database import count
from tests.fixtures.factories import PATIENT, create_rule, onboarded, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]


@pytest.mark.parametrize("length", [321, 5000])
async def test_an_overlong_email_address_fails_at_once_and_sends_nothing(
    client: httpx.AsyncClient,
    auth: Auth,
    drain: Drain,
    engine: AsyncEngine,
    smtp: SmtpServer,
    length: int,
) -> None:
    await create_rule(
        client,
        auth,
        {
            "name": "Welcome",
            "trigger_event": "patient.onboarded",
            "actions": [{"type": "send_email", "template": "welcome_patient"}],
        },
    )
    address = "a" * (length - len("@example.com")) + "@example.com"
    patient = {**PATIENT, "id": 77, "email": address}
    await post_event(client, auth, "patient.onboarded", onboarded(patient))
    await drain()
    async with create_sessionmaker(engine)() as session:
        [execution] = await session.scalars(select(Execution))
        [action] = await session.scalars(select(ExecutionAction))
    assert execution.status == "failure"
    assert (action.status, action.attempts) == ("failure", 1)
    assert action.error == "email recipient is longer than 320 characters"
    assert address not in (action.error or "")
    assert await count(engine, Message) == 0
    assert smtp.sink.messages == []
