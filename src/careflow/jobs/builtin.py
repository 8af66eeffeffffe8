"""Job kinds careflow ships for operations: ``noop`` (benchmarks) and ``probe`` (proofs).

``probe`` records each run in a ``job_probe`` table that is not part of the schema: the
test or benchmark that uses it creates it::

    CREATE TABLE job_probe (job_id bigint PRIMARY KEY, worker text NOT NULL,
                            attempt integer NOT NULL)

The primary key is the point: a job run twice cannot commit twice.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import text

from careflow.jobs.registry import JobContext, Sharing, job_handler

PROBE_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS job_probe "
    "(job_id bigint PRIMARY KEY, worker text NOT NULL, attempt integer NOT NULL)"
)
_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@job_handler("noop", sharing=Sharing.ROWS)
async def noop(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Does nothing: measures the queue's own cost."""


@job_handler("probe", sharing=Sharing.ROWS)
async def probe(ctx: JobContext, payload: dict[str, Any]) -> None:
    await ctx.session.execute(
        text("INSERT INTO job_probe (job_id, worker, attempt) VALUES (:job_id, :worker, :attempt)"),
        {"job_id": ctx.job_id, "worker": _PROCESS, "attempt": ctx.attempt},
    )
