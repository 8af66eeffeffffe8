"""Fixtures of the delivery tests: an SMTP transport to the test's SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from careflow.config import Settings
from careflow.delivery.email import SmtpTransport


@pytest.fixture
async def transport(settings: Settings) -> AsyncIterator[SmtpTransport]:
    """A transport to the test's SMTP server; what it keeps open is closed at teardown."""
    sending = SmtpTransport(settings)
    yield sending
    await sending.aclose()
