"""The floor for ``perf/ingest.py``: a bare FastAPI endpoint that inserts one row per request.

    uvicorn --app-dir bench/peers --factory bare_insert_app:create_app [--workers 2]

with ``BARE_DATABASE_URL`` set to a ``postgresql://`` DSN (asyncpg pool) or a SQLite file
path (``sqlite:///path``; one aiosqlite connection, writes serialised by a lock, WAL and
``synchronous=NORMAL`` as careflow sets them). ``POST /v1/events`` takes the same JSON body
as careflow's and answers 202 with the same envelope, but has no auth, no validation, no
entity snapshots, no job, no idempotency: only the one INSERT and its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

DDL = (
    "CREATE TABLE IF NOT EXISTS bare_events (id {pk}, event_id text UNIQUE, "
    "type text NOT NULL, data {json} NOT NULL, created_at {ts} NOT NULL)"
)


def create_app() -> FastAPI:
    url = os.environ["BARE_DATABASE_URL"]
    postgres = url.startswith("postgresql")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if postgres:
            import asyncpg

            pool = await asyncpg.create_pool(url, min_size=5, max_size=30)
            # Two worker processes may create it at the same moment: one wins, and the other
            # meets the table (or its sequence's type) half made, whatever IF NOT EXISTS says.
            async with pool.acquire() as conn:
                with contextlib.suppress(
                    asyncpg.UniqueViolationError,
                    asyncpg.DuplicateTableError,
                    asyncpg.DuplicateObjectError,
                ):
                    await conn.execute(
                        DDL.format(pk="bigserial PRIMARY KEY", json="jsonb", ts="timestamptz")
                    )
            app.state.pool = pool
            try:
                yield
            finally:
                await pool.close()
        else:
            import aiosqlite

            conn = await aiosqlite.connect(url.split(":///", 1)[1], timeout=30)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=30000")
            await conn.execute(DDL.format(pk="INTEGER PRIMARY KEY", json="text", ts="text"))
            await conn.commit()
            app.state.conn = conn
            app.state.lock = asyncio.Lock()
            try:
                yield
            finally:
                await conn.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/events", status_code=202)
    async def ingest(request: Request, body: dict[str, Any] = Body()) -> JSONResponse:
        event_id, kind = body.get("event_id"), body.get("type", "")
        data = json.dumps(body.get("data", {}))
        now = datetime.now(UTC)
        if postgres:
            async with request.app.state.pool.acquire() as conn:
                pk = await conn.fetchval(
                    "INSERT INTO bare_events (event_id, type, data, created_at) "
                    "VALUES ($1, $2, $3::jsonb, $4) RETURNING id",
                    event_id,
                    kind,
                    data,
                    now,
                )
        else:
            async with request.app.state.lock:
                conn = request.app.state.conn
                cursor = await conn.execute(
                    "INSERT INTO bare_events (event_id, type, data, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (event_id, kind, data, now.isoformat()),
                )
                pk = cursor.lastrowid
                await conn.commit()
        return JSONResponse(
            {"data": {"id": pk, "event_id": event_id, "type": kind, "status": "accepted"}},
            status_code=202,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
