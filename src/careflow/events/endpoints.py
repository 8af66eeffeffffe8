"""``POST /v1/events``, ``GET /v1/events/{id}``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import IngestDep, Principal, Role, require_roles
from careflow.events import service
from careflow.events.batcher import IngestBatcher
from careflow.events.schemas import EventAccepted, EventExecution, EventIn, EventOut
from careflow.events.validation import RULES_DOC, validate_event
from careflow.kit.deps import SessionDep, request_transaction
from careflow.kit.idempotency import HEADER as IDEMPOTENCY_HEADER
from careflow.kit.idempotency import idempotent
from careflow.kit.ids import row_id, row_id_path
from careflow.kit.metrics import EVENTS_INGESTED
from careflow.kit.schemas import DataEnvelope, component

router = APIRouter(tags=["events"])

INGEST_PATH = "/v1/events"  # its common path is answered by events/ingest_middleware.py

EventsReadDep = Annotated[Principal, require_roles(Role.ADMIN, Role.SPECIALIST, Role.SERVICE)]


@router.post(
    INGEST_PATH,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ingest a domain event (admin, service)",
    description=(
        "Stores the event and the entity snapshots it carries, then dispatches it to the "
        "organisation's automation rules and pathways in the background.\n\n"
        "The same `event_id` again in the organisation, with the same `type`, `data` and "
        "`occurred_at` (when given), answers **200** with the first event's record and runs "
        "nothing again; with a different one it is a **409** `event_id_conflict` naming the "
        "stored event. An event without `event_id` is always new. An "
        "`Idempotency-Key` header is honoured too (same key and body: the stored answer "
        "again, with `Idempotent-Replayed: true`).\n\n" + RULES_DOC
    ),
    response_model=DataEnvelope[EventAccepted],
    responses={
        200: {
            "description": "Duplicate `event_id`: the first event's record; nothing runs again",
            "model": DataEnvelope[EventAccepted],
        },
        409: {"description": "`event_id_conflict`: the `event_id` names a different event"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": component("EventCreate")}},
        }
    },
)
async def ingest_event(
    principal: IngestDep,
    body: EventIn,
    request: Request,
) -> Response:
    if IDEMPOTENCY_HEADER not in request.headers:
        # Most such requests are answered before the router, by events/ingest_middleware.py,
        # through this same function.
        return await accept_event(request.app, principal, body)
    # The stored answer must commit with the event: this request's own transaction, opened
    # here rather than as a dependency so that the common path above needs none.
    async with request_transaction(request) as session:
        return await _ingest_idempotent(session, principal, body, request)


async def _ingest_idempotent(
    session: AsyncSession, principal: Principal, body: EventIn, request: Request
) -> Response:
    async with idempotent(
        request,
        session,
        organization_id=principal.org_id,
        endpoint="events.ingest",
        body=body.model_dump(mode="json", exclude_unset=True),
    ) as guard:
        if guard.replay is not None:
            return guard.replay
        now = request.app.state.clock.now()
        result = await service.ingest_event(session, principal.org_id, body, now=now)
        accepted = accepted_response(result)
        response = await guard.respond(accepted.status_code, json.loads(bytes(accepted.body)))
    return response


async def accept_event(app: Any, principal: Principal, body: EventIn) -> JSONResponse:
    """The common path of ``POST /v1/events``, for the route and the ingest middleware alike.

    The event is validated here, once (``validate_event``; its ValidationError is the 400),
    then written with the other requests in flight (group commit, ``events/batcher.py``).
    """
    validate_event(body.type, body.data)
    result = await batcher_for(app).ingest(principal.org_id, body)
    return accepted_response(result.answer())


def batcher_for(app: Any) -> IngestBatcher:
    """The app's batcher, made on first use (and again for a new sessionmaker, in tests)."""
    state = app.state
    batcher: IngestBatcher | None = getattr(state, "ingest_batcher", None)
    if batcher is None or batcher.sessionmaker is not state.sessionmaker:
        batcher = IngestBatcher(state.sessionmaker, state.clock)
        state.ingest_batcher = batcher
    return batcher


def accepted_response(result: service.Ingested) -> JSONResponse:
    """202 with the new event, or 200 with the first one for a duplicate ``event_id``.

    The body is ``DataEnvelope[EventAccepted]`` (the documented schema), built as a plain
    dict: every field is already of its JSON type.
    """
    event = result.event
    data = {"id": event.id, "event_id": event.event_id, "type": event.type, "status": event.status}
    if result.created:
        EVENTS_INGESTED.labels(type=event.type).inc()
    code = status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK
    return JSONResponse({"data": data}, status_code=code)


@router.get(
    "/v1/events/{id}",
    summary="An event with the executions and episode it produced (admin, specialist, service)",
    responses={404: {"description": "`event_not_found`"}},
)
async def get_event(
    session: SessionDep,
    principal: EventsReadDep,
    event_pk: Annotated[str, row_id_path(alias="id", description="careflow's id of the event")],
) -> DataEnvelope[EventOut]:
    event, executions = await service.get_event(session, principal, row_id(event_pk, "event"))
    return DataEnvelope(
        data=EventOut(
            id=event.id,
            event_id=event.event_id,
            type=event.type,
            occurred_at=event.occurred_at,
            status=event.status,
            created_at=event.created_at,
            processed_at=event.processed_at,
            executions=[
                EventExecution(id=e.id, automation_rule_id=e.automation_rule_id, status=e.status)
                for e in executions
            ],
            episode_id=event.episode_id,
        )
    )
