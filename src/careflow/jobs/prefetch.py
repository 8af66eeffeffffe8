"""Prefetch: the reads a batch of one kind's jobs needs, done once for the whole batch.

A kind registers its prefetch with ``job_handler(kind, prefetch=fn)``. Before any job of a
batch runs, the worker calls each kind's ``fn(session, payloads, context)`` once with the
payloads of that kind's jobs in the batch and the worker's settings, clock and services
(``PrefetchContext``), and each handler finds the result in
``ctx.prefetched``. A job alone is prefetched as a batch of one: the same statements as its
own reads, and its locks taken in the same order as in a batch. A handler reads for itself
whatever it does not find there (what an earlier job of the batch may have changed); the
session's held writes are sent first by themselves (``jobs.held_writes``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.config import Settings
from careflow.kit.clock import Clock


@dataclass(frozen=True, slots=True)
class PrefetchContext:
    """What the worker running the batch gives its prefetches besides the session."""

    settings: Settings
    clock: Clock
    services: dict[str, Any]


# Reads for a whole batch of one kind's jobs, given their payloads.
Prefetch = Callable[[AsyncSession, Sequence[dict[str, Any]], PrefetchContext], Awaitable[Any]]

PREFETCH: dict[str, Prefetch] = {}


async def prefetch(
    session: AsyncSession, jobs: Iterable[tuple[str, dict[str, Any]]], context: PrefetchContext
) -> dict[str, Any]:
    """Each kind's prefetch over its jobs among ``jobs`` (kind, payload), by kind."""
    payloads: dict[str, list[dict[str, Any]]] = {}
    for kind, payload in jobs:
        if kind in PREFETCH:
            payloads.setdefault(kind, []).append(payload)
    return {kind: await PREFETCH[kind](session, items, context) for kind, items in payloads.items()}
