"""Group commit for ``POST /v1/events``: concurrent requests share one transaction.

A request hands its (validated) event to the process's batcher and waits. A drain task
writes whatever has queued up since its last write — one event when traffic is light, dozens
under load — in a single transaction, then answers every request of the batch. A request is
answered only after the transaction holding its event committed, so a 202 still means the
event, its snapshots and its dispatch job are durable.

One drain task at a time makes the biggest batches, which cost the least per event. When a
whole batch is waiting (one task cannot keep up), PostgreSQL gets up to ``IN_FLIGHT`` of
them, so the next batch is sent while the last one waits for its commit. Their snapshot
locks are taken in key order (``entities.repository.upsert_entities``), so two batches about one
patient queue and never deadlock. SQLite has one writer: one drain task.

If a batch fails, its events are written again one per transaction, so one bad event
cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.events import service
from careflow.events.schemas import EventIn
from careflow.kit.clock import Clock
from careflow.kit.context import Origin, current_origin

log = structlog.get_logger("careflow.events.batcher")

MAX_BATCH = 200
IN_FLIGHT = 4  # batches being written at once per process (PostgreSQL)


@dataclass(slots=True)
class _Pending:
    organization_id: int
    body: EventIn
    # The request's id and span, taken in the request's context: the drain task that
    # writes the event has a context of its own, and the dispatch job must carry these.
    origin: Origin = field(default_factory=current_origin)
    future: asyncio.Future[service.Ingested] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IngestBatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        max_batch: int = MAX_BATCH,
        in_flight: int | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.max_batch = max_batch
        if in_flight is None:
            bind = sessionmaker.kw.get("bind")
            sqlite = bind is not None and bind.dialect.name == "sqlite"
            in_flight = 1 if sqlite else IN_FLIGHT
        self.in_flight = in_flight
        self._pending: list[_Pending] = []
        self._running = 0  # drain tasks that may still take from _pending
        self._drainers: set[asyncio.Task[None]] = set()

    async def ingest(self, organization_id: int, body: EventIn) -> service.Ingested:
        item = _Pending(organization_id, body)
        self._pending.append(item)
        # No await between the append and this check, and a drainer leaves ``_running`` in
        # the same step as it finds ``_pending`` empty: a running drainer will see the item.
        # One drain task makes the biggest batches, the cheapest per event; another starts
        # only when a whole batch is waiting, that is when one task cannot keep up.
        if self._running == 0 or (
            self._running < self.in_flight and len(self._pending) >= self.max_batch
        ):
            self._running += 1
            # A fresh context: the batch serves many requests, not the one that started it.
            task = asyncio.create_task(
                self._drain(), name="careflow-ingest-batcher", context=contextvars.Context()
            )
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        # A client that goes away stops waiting; the write goes on for its neighbours.
        return await asyncio.shield(item.future)

    async def wait_idle(self) -> None:
        """Until every queued event is written (tests)."""
        while self._drainers:
            await asyncio.gather(*self._drainers, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
                try:
                    await self._write(batch)
                except BaseException as exc:  # never leave a request waiting for ever
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
        finally:
            self._running -= 1

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("ingest_batch_failed", size=len(batch), error_type=type(exc).__name__)
            for item in batch:
                try:
                    [result] = await self._commit([item])
                except Exception as one:
                    item.future.set_exception(one)
                else:
                    item.future.set_result(result)
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    async def _commit(self, batch: list[_Pending]) -> list[service.Ingested]:
        items = [(item.organization_id, item.body) for item in batch]
        async with self.sessionmaker() as session:
            results = await service.ingest_events(
                session, items, now=self.clock.now(), origins=[item.origin for item in batch]
            )
            await session.commit()
        return results
