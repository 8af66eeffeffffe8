from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.db import create_sessionmaker
from careflow.delivery.transports import SERVICES_KEY


@pytest.fixture
def maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def services() -> AsyncIterator[dict[str, Any]]:
    """The worker's shared clients; transports are built on first use and closed here."""
    shared: dict[str, Any] = {}
    yield shared
    transports = shared.get(SERVICES_KEY)
    if transports is not None:
        await transports.aclose()
