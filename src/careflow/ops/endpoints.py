"""Liveness, readiness and Prometheus metrics: no token needed."""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from careflow.jobs.service import sample_queue
from careflow.kit.metrics import REGISTRY
from careflow.migrate import current_revision, head_revision

router = APIRouter(tags=["operations"])
log = structlog.get_logger("careflow.ops")
# A scrape waits this long at most for the queue's depth.
QUEUE_SAMPLE_SECONDS = 2.0


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Load balancers and uptime checks often probe with HEAD: the same status, no body. Kept
# out of the OpenAPI document, which describes the GETs.
@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    return Response(status_code=200)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(request: Request) -> Response:
    ready = await readyz(request)
    return Response(status_code=ready.status_code)


@router.get("/readyz", summary="The database is reachable and migrated to head")
async def readyz(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        current = await current_revision(engine)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "error": type(exc).__name__},
            status_code=503,
        )
    if not await request.app.state.token_verifier.usable():
        # No key to verify tokens with (a JWKS that cannot be fetched): every request but
        # these probes would answer 401.
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "signing_keys": "unavailable"},
            status_code=503,
        )
    head = head_revision()
    if current != head:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "migrations": {"current": current, "head": head},
            },
            status_code=503,
        )
    return JSONResponse(
        {"status": "ok", "database": "ok", "migrations": {"current": current, "head": head}}
    )


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics(request: Request) -> Response:
    if getattr(request.app.state, "worker", None) is None:
        # No worker in this process (`serve --no-worker`) samples the queue: read it now, so
        # the API's /metrics shows the queue's depth (by status and by organisation) whatever
        # the topology.
        await _sample_queue_depth(request)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _sample_queue_depth(request: Request) -> None:
    try:
        async with asyncio.timeout(QUEUE_SAMPLE_SECONDS):
            async with request.app.state.sessionmaker() as session:
                await sample_queue(
                    session,
                    request.app.state.clock.now(),
                    top=request.app.state.settings.metrics_top_organizations,
                )
    except Exception as exc:  # the scrape still answers; the gauges keep their last values
        log.warning("metrics.queue_depth_failed", error=type(exc).__name__)
