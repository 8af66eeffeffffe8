"""create_app(): routers, middleware, error handlers, and the in-process worker."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

import careflow.tasks  # noqa: F401  (registers every job kind's handler)
from careflow import __version__, tracing
from careflow.apidocs.endpoints import install_docs
from careflow.auth import TokenVerifier, access_problem
from careflow.config import Settings, get_settings
from careflow.console import web as console
from careflow.contract import components
from careflow.db import create_engine, create_sessionmaker
from careflow.delivery.transports import close_transports
from careflow.errors import install_error_handlers
from careflow.events.ingest_middleware import IngestMiddleware
from careflow.jobs.queue import set_default_max_attempts
from careflow.kit.clock import Clock, SystemClock
from careflow.kit.gc_freeze import freeze_startup_heap
from careflow.kit.middleware import (
    BodySizeLimitMiddleware,
    ContainAnsweredErrors,
    NulGuardMiddleware,
    RequestIdMiddleware,
    RequestRecordMiddleware,
)
from careflow.kit.openapi import install_openapi
from careflow.logging import configure_logging
from careflow.routers import allowed_methods, include_routers
from careflow.token_keys import KeyConfigError


class CareflowAPI(FastAPI):
    """FastAPI with one layer outside its whole middleware stack (Starlette's own error
    middleware and, when tracing, the request's span around it): an unhandled error, once
    answered with the 500 envelope, is not re-raised to the server to be logged with its
    text (``kit.middleware.ContainAnsweredErrors``). It is applied here rather than in
    ``build_middleware_stack``, which the tracing instrumentation wraps and expects to
    begin with Starlette's error middleware."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._contained = ContainAnsweredErrors(functools.partial(FastAPI.__call__, self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._contained(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
    run_worker: bool = False,
    migrate_sqlite: bool = True,
    services: dict[str, Any] | None = None,
    token_verifier: TokenVerifier | None = None,
) -> FastAPI:
    """Build the ASGI app.

    ``engine`` and ``clock`` are injectable so tests share one database and move time;
    ``run_worker`` starts the job runner inside the process (``careflow serve``);
    ``token_verifier``, one already prepared (``careflow serve`` checks the keys before
    it builds the app). An unusable key setting raises ``token_keys.KeyConfigError``.
    """
    settings = settings or get_settings()
    verifier = token_verifier or TokenVerifier(settings)
    configure_logging(settings)
    tracing.configure_tracing(settings)
    set_default_max_attempts(settings.job_max_attempts)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not await verifier.usable():
            # However the app is served: no signing key, no request could authenticate.
            raise KeyConfigError("CAREFLOW_JWT_JWKS_URL gave no usable signing key")
        own_engine = engine is None
        eng = engine or create_engine(settings.database_url, behind_pooler=settings.behind_pooler)
        app.state.engine = eng
        app.state.sessionmaker = create_sessionmaker(eng)
        if own_engine:
            tracing.instrument_engine(eng)
        if migrate_sqlite and settings.is_sqlite:
            from careflow.migrate import upgrade_head

            await upgrade_head(eng)
        worker = None
        if run_worker:
            from careflow.jobs.worker import Worker

            worker = Worker(
                app.state.sessionmaker,
                settings,
                app.state.clock,
                services=app.state.services,
            )
            await worker.start()
        app.state.worker = worker
        freeze_startup_heap()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await close_transports(app.state.services)
            tracing.flush()
            if own_engine:
                await eng.dispose()

    app = CareflowAPI(
        title="careflow",
        version=__version__,
        description=(
            "Event-driven automations (consent forms that gate booking, emails, SMS, "
            "segments, reminders) and pathway routing for healthcare practice platforms."
        ),
        lifespan=lifespan,
        # Served from files inside the package (careflow.apidocs), not FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own telemetry stays off: careflow's traces come from the OpenTelemetry
        # instrumentation (careflow.tracing) when CAREFLOW_TRACING=otlp, and off, FastAPI
        # skips asking the OpenTelemetry providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.token_verifier = verifier
    app.state.clock = clock or SystemClock()
    app.state.services = services if services is not None else {}
    if engine is not None:
        # Usable without the lifespan too (tests that drive the app directly).
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        tracing.instrument_engine(engine)

    install_error_handlers(
        app,
        access_problem=access_problem,
        allowed_methods=allowed_methods,
        page_problem=console.page_problem,
    )
    console.install(app)
    include_routers(app)
    install_openapi(app, components())
    install_docs(app)
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Inside the request id and the request record, so its answers carry both like any other.
    app.add_middleware(IngestMiddleware, max_bytes=settings.max_body_bytes)
    # Inside the request id, which the access lines carry.
    app.add_middleware(RequestRecordMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # Outside every layer above, the fast ingestion path's included.
    tracing.instrument_app(app)
    return app
