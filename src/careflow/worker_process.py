"""``careflow worker``: one process that runs a ``Worker`` until it is told to stop.

Like ``app.py`` for the API, it stands above the domains: it imports ``careflow.tasks``, so
every domain's job handlers are registered before the worker claims anything.

The process reads its settings, logs as configured, serves metrics if asked to, and runs
the worker until SIGTERM or SIGINT; then it lets in-flight jobs finish (or releases them)
and closes the shared transports and the engine.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

import careflow.tasks  # noqa: F401  (registers every job kind's handler)
from careflow.jobs import queue
from careflow.jobs.worker import Worker
from careflow.kit.clock import SystemClock

log = structlog.get_logger("careflow.jobs")


async def run_worker_process(concurrency: int | None = None) -> None:
    """``careflow worker``: run until SIGTERM/SIGINT, then finish or release in-flight jobs.

    A second signal stops at once (in-flight jobs are still released). Database outages
    are waited out inside the worker, never turned into an exit.
    """
    from careflow import tracing
    from careflow.config import get_settings
    from careflow.db import create_engine, create_sessionmaker
    from careflow.delivery.transports import close_transports
    from careflow.kit.gc_freeze import freeze_startup_heap
    from careflow.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    tracing.configure_tracing(settings)
    queue.set_default_max_attempts(settings.job_max_attempts)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from careflow.kit.metrics import REGISTRY

        start_http_server(settings.worker_metrics_port, addr="0.0.0.0", registry=REGISTRY)
    engine = create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
    tracing.instrument_engine(engine)
    worker = Worker(
        create_sessionmaker(engine), settings, SystemClock(), services={}, concurrency=concurrency
    )
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await worker.start()
        freeze_startup_heap()
        await stop_requested.wait()
        log.info("jobs.shutdown_requested", worker=worker.name)
        stop_requested.clear()
        graceful = asyncio.create_task(worker.stop(graceful=True))
        second_signal = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({graceful, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        if not graceful.done():
            log.warning("jobs.shutdown_forced", worker=worker.name)
            worker.cancel_inflight()
            await graceful
        second_signal.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await close_transports(worker.services)
        await engine.dispose()
        tracing.shut_down()
