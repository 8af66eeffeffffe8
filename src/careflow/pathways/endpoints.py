"""Pathway family: /v1/pathway-triggers, /v1/pathway-configs, /v1/pathway-rules.

Every body carries ``meta.request_id``; errors get the pathway envelope from
``careflow.errors`` (decided by the path prefix).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from careflow.auth import AdminDep, StaffDep
from careflow.kit.context import current_request_id
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.idempotency import idempotent
from careflow.kit.pagination import OffsetDep, OffsetParams
from careflow.kit.schemas import OffsetMeta, PathwayEnvelope, PathwayListEnvelope, RequestMeta
from careflow.pathways import repository, service
from careflow.pathways.catalog import TRIGGER_TYPES, TRIGGERS, TriggerType
from careflow.pathways.resolution import EffectiveConfig, Resolution
from careflow.pathways.schemas import (
    BaseConfig,
    ConditionField,
    CreationMode,
    PathwayConfig,
    PathwayConfigPut,
    PathwayRule,
    PathwayRuleCreate,
    PathwayRuleUpdate,
    PathwayTrigger,
    Priority,
    ResolveRequest,
    RoutingResolution,
    RuleEvaluation,
)

router = APIRouter(tags=["pathways"])

TriggerTypeFilter = Literal[TRIGGER_TYPES]  # type: ignore[valid-type]


def _meta() -> RequestMeta:
    return RequestMeta(request_id=current_request_id())


def _list_meta(total: int, page: OffsetParams) -> OffsetMeta:
    return OffsetMeta(
        total=total, limit=page.limit, offset=page.offset, request_id=current_request_id()
    )


def _trigger_out(trigger: TriggerType) -> PathwayTrigger:
    return PathwayTrigger(
        trigger_type=trigger.trigger_type,
        entity_type=trigger.entity_type,
        description=trigger.description,
        default_config=BaseConfig(**trigger.default_config),
        condition_fields=[
            ConditionField(
                name=f.name, type=f.type, maps_to=f.maps_to, description=f.description
            )
            for f in trigger.condition_fields
        ],
    )


def _config_out(config: EffectiveConfig) -> PathwayConfig:
    return PathwayConfig(
        trigger_type=config.trigger_type,
        is_default=config.is_default,
        updated_at=config.updated_at,
        **config.config,
    )


def _resolution_out(resolution: Resolution) -> RoutingResolution:
    return RoutingResolution(
        trigger_type=resolution.trigger_type,
        config=BaseConfig(**resolution.config),
        matched_rule_id=resolution.matched_rule_id,
        evaluations=[
            RuleEvaluation(
                rule_id=e.rule_id,
                priority=e.priority,
                enabled=e.enabled,
                matched=e.matched,
                failed_conditions=e.failed_conditions,
            )
            for e in resolution.evaluations
        ],
    )


# --- triggers -----------------------------------------------------------------------------


@router.get(
    "/v1/pathway-triggers",
    summary="List pathway trigger types",
    response_model=PathwayListEnvelope[PathwayTrigger],
)
async def list_triggers(principal: StaffDep, page: OffsetDep) -> PathwayListEnvelope[PathwayTrigger]:
    triggers = [TRIGGERS[t] for t in TRIGGER_TYPES]
    return PathwayListEnvelope[PathwayTrigger](
        data=[_trigger_out(t) for t in triggers[page.offset : page.offset + page.limit]],
        meta=_list_meta(len(triggers), page),
    )


# --- configs ------------------------------------------------------------------------------


@router.get(
    "/v1/pathway-configs",
    summary="List the organisation's base configs (one per trigger type)",
    response_model=PathwayListEnvelope[PathwayConfig],
)
async def list_configs(
    session: SessionDep, principal: StaffDep, page: OffsetDep
) -> PathwayListEnvelope[PathwayConfig]:
    configs = await service.list_configs(session, principal)
    return PathwayListEnvelope[PathwayConfig](
        data=[_config_out(c) for c in configs[page.offset : page.offset + page.limit]],
        meta=_list_meta(len(configs), page),
    )


@router.get(
    "/v1/pathway-configs/{trigger_type}",
    summary="Get the base config of a trigger type",
    response_model=PathwayEnvelope[PathwayConfig],
)
async def get_config(
    trigger_type: str, session: SessionDep, principal: StaffDep
) -> PathwayEnvelope[PathwayConfig]:
    config = await service.get_config(session, principal, trigger_type)
    return PathwayEnvelope[PathwayConfig](data=_config_out(config), meta=_meta())


@router.put(
    "/v1/pathway-configs/{trigger_type}",
    summary="Replace the base config of a trigger type (admin)",
    response_model=PathwayEnvelope[PathwayConfig],
    responses={409: {"description": "`CONFLICT`: a concurrent first write of this config; retry"}},
)
async def put_config(
    trigger_type: str,
    body: PathwayConfigPut,
    session: SessionDep,
    principal: AdminDep,
    clock: ClockDep,
) -> PathwayEnvelope[PathwayConfig]:
    config = await service.put_config(session, principal, trigger_type, body, clock.now())
    return PathwayEnvelope[PathwayConfig](data=_config_out(config), meta=_meta())


# --- rules --------------------------------------------------------------------------------


@router.get(
    "/v1/pathway-rules",
    summary="List pathway rules (by trigger type, then priority: evaluation order)",
    response_model=PathwayListEnvelope[PathwayRule],
)
async def list_rules(
    session: SessionDep,
    principal: StaffDep,
    page: OffsetDep,
    trigger_type: Annotated[TriggerTypeFilter | None, Query()] = None,
    enabled: Annotated[
        Literal["true", "false", "enabled", "disabled"] | None,
        Query(description="`true`/`enabled` or `false`/`disabled`"),
    ] = None,
    creation_mode: Annotated[CreationMode | None, Query()] = None,
    suggested_priority: Annotated[Priority | None, Query()] = None,
) -> PathwayListEnvelope[PathwayRule]:
    filters = repository.RuleFilters(
        trigger_type=trigger_type,
        enabled=None if enabled is None else enabled in ("true", "enabled"),
        creation_mode=creation_mode,
        suggested_priority=suggested_priority,
    )
    rules, total = await service.list_rules(
        session, principal, filters, limit=page.limit, offset=page.offset
    )
    return PathwayListEnvelope[PathwayRule](
        data=[PathwayRule.model_validate(r) for r in rules], meta=_list_meta(total, page)
    )


# Declared before the /{rule_id} routes so "resolve" is never read as a rule id.
@router.post(
    "/v1/pathway-rules/resolve",
    summary="Explain how an event would be routed (stores nothing)",
    response_model=PathwayEnvelope[RoutingResolution],
)
async def resolve_rules(
    body: ResolveRequest, session: SessionDep, principal: StaffDep
) -> PathwayEnvelope[RoutingResolution]:
    resolution = await service.explain(session, principal, body)
    return PathwayEnvelope[RoutingResolution](data=_resolution_out(resolution), meta=_meta())


@router.post(
    "/v1/pathway-rules",
    status_code=201,
    summary="Create a pathway rule (admin; supports Idempotency-Key)",
    response_model=PathwayEnvelope[PathwayRule],
)
async def create_rule(
    request: Request,
    body: PathwayRuleCreate,
    session: SessionDep,
    principal: AdminDep,
    clock: ClockDep,
) -> JSONResponse:
    async with idempotent(
        request, session, organization_id=principal.org_id, endpoint="pathway-rules.create"
    ) as guard:
        if guard.replay is not None:
            return guard.replay
        rule = await service.create_rule(session, principal, body, clock.now())
        envelope = PathwayEnvelope[PathwayRule](data=PathwayRule.model_validate(rule), meta=_meta())
        return await guard.respond(201, envelope.model_dump(mode="json"))


@router.get(
    "/v1/pathway-rules/{rule_id}",
    summary="Get a pathway rule",
    response_model=PathwayEnvelope[PathwayRule],
)
async def get_rule(
    rule_id: str, session: SessionDep, principal: StaffDep
) -> PathwayEnvelope[PathwayRule]:
    rule = await service.get_rule(session, principal, rule_id)
    return PathwayEnvelope[PathwayRule](data=PathwayRule.model_validate(rule), meta=_meta())


@router.patch(
    "/v1/pathway-rules/{rule_id}",
    summary="Update a pathway rule (admin; trigger_type cannot change)",
    response_model=PathwayEnvelope[PathwayRule],
    responses={409: {"description": "`CONFLICT`: another rule has this trigger type and priority"}},
)
async def update_rule(
    rule_id: str,
    body: PathwayRuleUpdate,
    session: SessionDep,
    principal: AdminDep,
    clock: ClockDep,
) -> PathwayEnvelope[PathwayRule]:
    rule = await service.update_rule(session, principal, rule_id, body, clock.now())
    return PathwayEnvelope[PathwayRule](data=PathwayRule.model_validate(rule), meta=_meta())


@router.delete(
    "/v1/pathway-rules/{rule_id}",
    summary="Delete a pathway rule (admin)",
    response_model=PathwayEnvelope[None],
)
async def delete_rule(
    rule_id: str, session: SessionDep, principal: AdminDep, clock: ClockDep
) -> PathwayEnvelope[None]:
    await service.delete_rule(session, principal, rule_id, clock.now())
    return PathwayEnvelope[None](data=None, meta=_meta())
