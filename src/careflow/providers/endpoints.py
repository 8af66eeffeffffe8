"""``POST /v1/providers/twilio/status``: Twilio's status callbacks for careflow's SMS; and
``POST /v1/providers/twilio/inbound``: texts patients send (see ``twilio_inbound``).

No bearer token: Twilio proves the request with ``X-Twilio-Signature`` (see ``service``).
Answers 204 when applied (or a step careflow does not track), 202 when careflow has not
recorded the message yet (the callback is held and applied once it has), 403 when the
signature is missing or wrong; a 403 changes nothing.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Query, Request, Response

from careflow.kit.deps import ClockDep, SessionDep, SettingsDep
from careflow.providers import inbound, service

router = APIRouter(prefix="/v1/providers", tags=["providers"])

# TwiML that asks Twilio to send nothing back.
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class TwiMLResponse(Response):
    media_type = "text/xml"


@router.post(
    "/twilio/inbound",
    summary="A text a patient sent to one of the organisation's sms_numbers (signed by Twilio)",
    response_class=TwiMLResponse,
    responses={
        200: {
            "description": "Empty TwiML: careflow sends no reply",
            "content": {"text/xml": {"schema": {"type": "string"}, "example": EMPTY_TWIML}},
        },
        403: {"description": "missing or invalid signature"},
        404: {"description": "no organisation receives texts on the To number"},
    },
    openapi_extra={"security": []},
)
async def twilio_inbound(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    x_twilio_signature: Annotated[str | None, Header()] = None,
) -> TwiMLResponse:
    """No bearer token: Twilio signs the request as it signs status callbacks. Answers
    empty TwiML when applied, 403 for a bad signature, 404 for a ``To`` no organisation
    holds; only the TwiML answer changed anything."""
    query = request.url.query
    await inbound.twilio_inbound(
        session,
        settings,
        path_and_query=request.url.path + (f"?{query}" if query else ""),
        form=dict(parse_qsl((await request.body()).decode("utf-8", "replace"))),
        signature=x_twilio_signature,
        now=clock.now(),
    )
    return TwiMLResponse(EMPTY_TWIML)


@router.post(
    "/twilio/status",
    status_code=204,
    summary="Twilio's status callback for an SMS (signed with X-Twilio-Signature)",
    responses={
        202: {"description": "held: applied once careflow has recorded the message"},
        403: {"description": "missing or invalid signature"},
    },
    openapi_extra={"security": []},
)
async def twilio_status(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    message_id: Annotated[str, Query(min_length=1, max_length=40)],
    x_twilio_signature: Annotated[str | None, Header()] = None,
) -> Response:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    query = request.url.query
    path_and_query = request.url.path + (f"?{query}" if query else "")
    applied = await service.twilio_status(
        session,
        settings,
        message_id=message_id,
        path_and_query=path_and_query,
        form=form,
        signature=x_twilio_signature,
        now=clock.now(),
    )
    return Response(status_code=204 if applied else 202)
