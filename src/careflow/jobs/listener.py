"""LISTEN for ``careflow_jobs`` on PostgreSQL so a commit elsewhere wakes this worker at once.

Polling stays the fallback that always works: losing this connection only costs latency,
so it is re-established in the background and never stops the worker.

LISTEN needs a session of its own: behind a transaction-mode pooler it is made on
``CAREFLOW_DATABASE_LISTEN_URL`` (a direct connection), or not at all (``listen_dsn``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import URL, make_url

from careflow.config import Settings
from careflow.jobs.queue import NOTIFY_CHANNEL

log = structlog.get_logger("careflow.jobs")

PING_INTERVAL_SECONDS = 10.0
MAX_RECONNECT_DELAY_SECONDS = 30.0


def asyncpg_dsn(url: URL) -> str:
    """The SQLAlchemy URL as a plain ``postgresql://`` DSN asyncpg understands."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen_dsn(engine_url: URL, settings: Settings) -> str | None:
    """Where a worker whose engine reaches ``engine_url`` LISTENs, or None (polling alone).

    ``CAREFLOW_DATABASE_LISTEN_URL`` when set; else the engine's own server, unless a pooler
    is in front of it: a transaction-mode pooler gives the LISTEN's session to other
    clients as soon as its transaction ends, and the notifications go with it.
    """
    if engine_url.get_backend_name() != "postgresql":
        return None
    if settings.database_listen_url is not None:
        return asyncpg_dsn(make_url(settings.database_listen_url))
    if settings.behind_pooler:
        return None
    return asyncpg_dsn(engine_url)


class NotifyListener:
    def __init__(self, dsn: str, on_notify: Callable[[], None]) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="careflow-jobs-listen")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._listen_until_lost()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure here only costs latency: retry
                failures += 1
                log.warning("jobs.listen_failed", error=type(exc).__name__, failures=failures)
            if self._stopping.is_set():
                return
            delay = min(MAX_RECONNECT_DELAY_SECONDS, 0.5 * 2 ** min(failures, 10))
            await _wait(self._stopping, delay)

    async def _listen_until_lost(self) -> None:
        # Named, so an operator can find (or terminate) it in pg_stat_activity.
        conn = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": "careflow-listener"}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            self.connected = True
            log.info("jobs.listening", channel=NOTIFY_CHANNEL)
            # Anything committed while we were not listening went unheard.
            self._on_notify()
            while not lost.is_set() and not self._stopping.is_set():
                await _wait(lost, PING_INTERVAL_SECONDS)
                if not lost.is_set() and not conn.is_closed():
                    # A half-open TCP connection reports nothing until it is used.
                    await conn.fetchval("SELECT 1", timeout=PING_INTERVAL_SECONDS)
            if lost.is_set():
                log.warning("jobs.listen_connection_lost")
        finally:
            self.connected = False
            await _close_quietly(conn)

    def _notified(self, *_args: Any) -> None:
        self._on_notify()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:  # closing a broken connection may fail: drop it instead
        conn.terminate()
