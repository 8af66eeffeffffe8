"""Fixtures of the executor tests: the worker's shared clients, and action contexts bound to
the test's settings, clock and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext
from careflow.config import Settings
from careflow.delivery.transports import SERVICES_KEY
from careflow.kit.clock import FrozenClock
from careflow.models import Execution
from tests.fixtures.factories import make_context

ContextFor = Callable[..., ActionContext]


@pytest.fixture
async def services() -> AsyncIterator[dict[str, Any]]:
    """The worker's shared clients; transports are built on first use and closed here."""
    shared: dict[str, Any] = {}
    yield shared
    transports = shared.get(SERVICES_KEY)
    if transports is not None:
        await transports.aclose()


@pytest.fixture
def context_for(settings: Settings, clock: FrozenClock, services: dict[str, Any]) -> ContextFor:
    """``context_for(session, execution, config, **overrides)``: the context an executor runs
    in, with this test's settings, clock and clients unless ``overrides`` name others."""

    def make(
        session: AsyncSession, execution: Execution, config: Mapping[str, Any], **overrides: Any
    ) -> ActionContext:
        bound: dict[str, Any] = {"settings": settings, "clock": clock, "services": services}
        return make_context(
            session, execution=execution, config=config, **{**bound, **overrides}
        )

    return make
