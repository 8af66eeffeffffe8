"""HTTP edge of automation rules and the trigger/action catalogs (``/v1/automations``)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from careflow.auth import AdminDep, StaffDep
from careflow.automations import service
from careflow.automations.catalog import action_catalog, trigger_catalog
from careflow.automations.schemas import (
    ActionDefinitionList,
    AutomationRule,
    TriggerList,
)
from careflow.errors import NOT_JSON_CONTENT, ValidationError, is_json_content_type
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.idempotency import idempotent
from careflow.kit.ids import row_id
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, component
from careflow.kit.text import UNSTORABLE_MESSAGE, unstorable_path

router = APIRouter(prefix="/v1/automations", tags=["automations"])


# NaN and Infinity are not JSON: PostgreSQL's JSONB refuses them, so they are refused here
# rather than failing at insert.
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


async def _read_json(request: Request) -> Any:
    """The body as JSON, read after the role checks so a caller without access learns nothing.

    (A ``Body()`` parameter would be parsed before dependencies run: a malformed body from an
    anonymous caller would answer 400 instead of 401.)
    """
    if not is_json_content_type(request.headers.get("content-type")):
        # As every other endpoint reads a body (FastAPI's rule): one family, one answer.
        raise ValidationError(details=[{"field": "body", "message": NOT_JSON_CONTENT}])
    raw = await request.body()
    if not raw.strip():
        raise ValidationError(details=[{"field": "body", "message": "a JSON body is required"}])
    try:
        payload = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValidationError(
            details=[{"field": "body", "message": "Body is not valid JSON"}]
        ) from exc
    bad = unstorable_path(payload)
    if bad is not None:
        # The whole body is refused, as StrictInput bodies are; the message says where.
        message = f"{UNSTORABLE_MESSAGE} (at {bad or 'body'})"
        raise ValidationError(details=[{"field": "body", "message": message}])
    return payload


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


@router.get("/triggers", response_model=TriggerList, summary="Trigger catalog")
async def list_triggers(principal: StaffDep) -> dict[str, Any]:
    return {"data": trigger_catalog()}


@router.get("/actions", response_model=ActionDefinitionList, summary="Action types catalog")
async def list_actions(principal: StaffDep) -> dict[str, Any]:
    return {"data": action_catalog()}


@router.get("/rules", response_model=ListEnvelope[AutomationRule], summary="List automation rules")
async def list_rules(
    principal: StaffDep,
    session: SessionDep,
    page: PageDep,
    trigger_event: Annotated[
        str | None, Query(max_length=64, description="Filter by trigger event")
    ] = None,
    enabled: Annotated[bool | None, Query(description="Filter by enabled status")] = None,
) -> dict[str, Any]:
    rules, total = await service.list_rules(
        session, principal, trigger_event=trigger_event, enabled=enabled, page=page
    )
    stats = await service.run_stats(session, principal, rules)
    return {"data": [_out(r, stats) for r in rules], "meta": page.meta(total)}


def _out(rule: Any, stats: dict[int, service.RunStats]) -> AutomationRule:
    ran = stats.get(rule.id, service.RunStats())
    return AutomationRule.of(rule, ran.execution_count, ran.last_executed_at)


@router.get("/rules/{rule_id}", response_model=DataEnvelope[AutomationRule], summary="Get automation rule")
async def get_rule(rule_id: str, principal: StaffDep, session: SessionDep) -> dict[str, Any]:
    rule = await service.get_rule(session, principal, row_id(rule_id, "automation_rule"))
    return {"data": _out(rule, await service.run_stats(session, principal, [rule]))}


@router.post(
    "/rules",
    status_code=201,
    response_model=DataEnvelope[AutomationRule],
    summary="Create automation rule (accepts an Idempotency-Key header)",
    openapi_extra=_json_body(component("AutomationRuleCreate")),
)
async def create_rule(
    principal: AdminDep,
    session: SessionDep,
    clock: ClockDep,
    request: Request,
) -> Response:
    # Taken raw and checked by the service, so one 400 names every bad field.
    payload = await _read_json(request)
    async with idempotent(
        request,
        session,
        organization_id=principal.org_id,
        endpoint="automation-rules.create",
        body=payload,
    ) as guard:
        if guard.replay is not None:
            return guard.replay
        rule = await service.create_rule(session, principal, payload, now=clock.now())
        envelope = DataEnvelope[AutomationRule](data=AutomationRule.of(rule))
        return await guard.respond(201, envelope.model_dump(mode="json"))


@router.put(
    "/rules/{rule_id}",
    response_model=DataEnvelope[AutomationRule],
    summary="Update automation rule (only the fields sent)",
    openapi_extra=_json_body(component("AutomationRuleUpdate")),
)
async def update_rule(
    rule_id: str,
    principal: AdminDep,
    session: SessionDep,
    clock: ClockDep,
    request: Request,
) -> dict[str, Any]:
    rule_pk = row_id(rule_id, "automation_rule")
    payload = await _read_json(request)
    rule = await service.update_rule(session, principal, rule_pk, payload, now=clock.now())
    return {"data": _out(rule, await service.run_stats(session, principal, [rule]))}


@router.delete(
    "/rules/{rule_id}",
    status_code=204,
    response_class=Response,
    summary="Delete automation rule",
)
async def delete_rule(
    rule_id: str, principal: AdminDep, session: SessionDep, clock: ClockDep
) -> Response:
    await service.delete_rule(
        session, principal, row_id(rule_id, "automation_rule"), now=clock.now()
    )
    return Response(status_code=204)
