"""Pathway rules and base configs: validation, uniqueness, versions and audit entries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record
from careflow.auth import Principal
from careflow.conditions import SaveChecks, validate_condition
from careflow.entities.catalog import context_entities
from careflow.entities.context import join_snapshots
from careflow.errors import ConflictError, NotFoundError, ValidationError
from careflow.kit.rulesets import bump
from careflow.pathways import repository
from careflow.pathways.catalog import CONFIG_FIELDS, TRIGGERS, BaseConfig, TriggerType
from careflow.pathways.explanation import FailedCondition, failed_conditions
from careflow.pathways.models import PathwayConfig, PathwayRule
from careflow.pathways.resolution import (
    EffectiveConfig,
    Evaluation,
    Resolution,
    effective_config,
    effective_configs,
    resolve,
    ruleset_scope,
)
from careflow.pathways.schemas import (
    NOT_NULLABLE_ON_UPDATE,
    PathwayConfigPut,
    PathwayRuleCreate,
    PathwayRuleUpdate,
    ResolveRequest,
)

RULE_FIELDS = (
    "trigger_type",
    "rule_name",
    "priority",
    "conditions",
    *CONFIG_FIELDS,
    "enabled",
)


def known_trigger(trigger_type: str, *, field: str = "trigger_type") -> TriggerType:
    trigger = TRIGGERS.get(trigger_type)
    if trigger is None:
        raise ValidationError(details=[{"field": field, "message": "unknown trigger type"}])
    return trigger


def _trigger_or_404(trigger_type: str) -> TriggerType:
    trigger = TRIGGERS.get(trigger_type)
    if trigger is None:
        raise NotFoundError(f"Unknown trigger type {trigger_type!r}")
    return trigger


def _unnamed_keys(
    condition: Mapping[str, Any], named: Mapping[str, str], where: str
) -> list[dict[str, str]]:
    # A key without a dot is neither an entity field path nor, unless named, an alias: a typo
    # such as `invoice_types` on an appointment trigger would otherwise never match, silently.
    errors: list[dict[str, str]] = []
    for key, matcher in condition.items():
        at = f"{where}.{key}"
        if key in ("all", "any"):
            for i, sub in enumerate(matcher):
                errors += _unnamed_keys(sub, named, f"{at}[{i}]")
        elif key == "not":
            errors += _unnamed_keys(matcher, named, at)
        elif "." not in key and key not in named:
            names = ", ".join(named) or "none"
            errors.append(
                {
                    "field": at,
                    "message": f"not a named condition field of this trigger ({names}) "
                    "nor a dotted path such as appointment.type",
                }
            )
    return errors


def validate_conditions(trigger: TriggerType, conditions: Any) -> None:
    """A rule's conditions: the language's syntax, paths into the entities the trigger's
    context holds (or its named fields), the size bounds of a saved condition."""
    named = trigger.named_fields
    saving = SaveChecks(entities=context_entities(trigger.entity_type))
    errors = validate_condition(conditions, named_fields=named, saving=saving)
    if not errors:
        errors = _unnamed_keys(conditions, named, "conditions")
    if errors:
        raise ValidationError(details=errors)


def rule_snapshot(rule: PathwayRule) -> dict[str, Any]:
    """The rule's fields as audit entries keep them (JSON values only)."""
    snapshot = {f: getattr(rule, f) for f in RULE_FIELDS}
    snapshot["version"] = rule.version
    return snapshot


def _duplicate_priority(trigger_type: str, priority: int) -> ConflictError:
    return ConflictError(
        f"A rule with priority {priority} already exists for trigger {trigger_type!r}",
        details=[
            {
                "field": "priority",
                "message": "must be unique per trigger type within the organisation",
            }
        ],
    )


# --- rules --------------------------------------------------------------------------------


async def list_rules(
    session: AsyncSession,
    principal: Principal,
    filters: repository.RuleFilters,
    *,
    limit: int,
    offset: int,
) -> tuple[Sequence[PathwayRule], int]:
    return await repository.list_rules(
        session, principal.org_id, filters, limit=limit, offset=offset
    )


async def get_rule(session: AsyncSession, principal: Principal, rule_id: str) -> PathwayRule:
    rule = await repository.get_rule(session, principal.org_id, rule_id)
    if rule is None:
        raise NotFoundError("Pathway rule not found")
    return rule


async def create_rule(
    session: AsyncSession, principal: Principal, body: PathwayRuleCreate, now: datetime
) -> PathwayRule:
    trigger = known_trigger(body.trigger_type)
    if body.conditions is not None:
        validate_conditions(trigger, body.conditions)
    rule = PathwayRule(
        id=f"rule_{uuid.uuid4()}",
        organization_id=principal.org_id,
        trigger_type=trigger.trigger_type,
        rule_name=body.rule_name,
        priority=body.priority,
        conditions=body.conditions,
        creation_mode=body.creation_mode,
        inbox_visibility=body.inbox_visibility,
        journey_type=body.journey_type,
        suggested_assignment=body.suggested_assignment,
        suggested_priority=body.suggested_priority,
        expected_next_actor=body.expected_next_actor,
        enabled=True if body.enabled is None else body.enabled,
        version=1,
        created_at=now,
        updated_at=now,
    )
    try:
        async with repository.unique_write(session):
            session.add(rule)
    except IntegrityError as exc:
        raise _duplicate_priority(body.trigger_type, body.priority) from exc
    await bump(session, principal.org_id, ruleset_scope(body.trigger_type))
    await record(
        session,
        principal,
        action="create",
        object_type="pathway_rule",
        object_id=rule.id,
        before=None,
        after=rule_snapshot(rule),
        now=now,
    )
    return rule


async def update_rule(
    session: AsyncSession,
    principal: Principal,
    rule_id: str,
    body: PathwayRuleUpdate,
    now: datetime,
) -> PathwayRule:
    rule = await get_rule(session, principal, rule_id)
    sent = body.model_fields_set
    errors = [
        {"field": f, "message": "may not be null"}
        for f in NOT_NULLABLE_ON_UPDATE
        if f in sent and getattr(body, f) is None
    ]
    if "trigger_type" in sent and body.trigger_type != rule.trigger_type:
        errors.append(
            {
                "field": "trigger_type",
                "message": "cannot be changed; delete the rule and create a new one",
            }
        )
    if errors:
        raise ValidationError(details=errors)
    if "conditions" in sent and body.conditions is not None:
        validate_conditions(TRIGGERS[rule.trigger_type], body.conditions)

    before = rule_snapshot(rule)
    changes = {f: getattr(body, f) for f in sent if f != "trigger_type"}
    priority = changes.get("priority", rule.priority)
    if all(getattr(rule, f) == v for f, v in changes.items()):
        return rule
    try:
        async with repository.unique_write(session):
            for field, value in changes.items():
                setattr(rule, field, value)
            # A new version is what invalidates the compiled-condition cache entry.
            rule.version += 1
            rule.updated_at = now
    except IntegrityError as exc:
        # Read nothing from `rule` here: the failed flush expired it.
        raise _duplicate_priority(before["trigger_type"], priority) from exc
    await bump(session, principal.org_id, ruleset_scope(before["trigger_type"]))
    old, new = changed_fields(before, rule_snapshot(rule))
    await record(
        session,
        principal,
        action="update",
        object_type="pathway_rule",
        object_id=rule.id,
        before=old,
        after=new,
        now=now,
    )
    return rule


async def delete_rule(
    session: AsyncSession, principal: Principal, rule_id: str, now: datetime
) -> None:
    rule = await get_rule(session, principal, rule_id)
    before = rule_snapshot(rule)
    await session.delete(rule)
    await session.flush()
    await bump(session, principal.org_id, ruleset_scope(before["trigger_type"]))
    await record(
        session,
        principal,
        action="delete",
        object_type="pathway_rule",
        object_id=rule_id,
        before=before,
        after=None,
        now=now,
    )


# --- configs ------------------------------------------------------------------------------


async def list_configs(session: AsyncSession, principal: Principal) -> list[EffectiveConfig]:
    return await effective_configs(session, principal.org_id)


async def get_config(
    session: AsyncSession, principal: Principal, trigger_type: str
) -> EffectiveConfig:
    _trigger_or_404(trigger_type)
    return await effective_config(session, principal.org_id, trigger_type)


async def put_config(
    session: AsyncSession,
    principal: Principal,
    trigger_type: str,
    body: PathwayConfigPut,
    now: datetime,
) -> EffectiveConfig:
    _trigger_or_404(trigger_type)
    current = await effective_config(session, principal.org_id, trigger_type)
    values = cast(BaseConfig, body.model_dump())
    row = await repository.get_config(session, principal.org_id, trigger_type)
    if row is None:
        row = PathwayConfig(
            organization_id=principal.org_id,
            trigger_type=trigger_type,
            created_at=now,
            updated_at=now,
            **values,
        )
        try:
            async with repository.unique_write(session):
                session.add(row)
        except IntegrityError as exc:
            # Another PUT created it first; the caller may simply retry theirs.
            raise ConflictError("The config was changed concurrently; retry") from exc
    else:
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = now
        await session.flush()
    await bump(session, principal.org_id, ruleset_scope(trigger_type))
    old, new = changed_fields(dict(current.config), dict(values))
    await record(
        session,
        principal,
        action="update",
        object_type="pathway_config",
        object_id=trigger_type,
        before=old,
        after=new,
        now=now,
    )
    return EffectiveConfig(trigger_type, values, False, now)


# --- resolution ---------------------------------------------------------------------------


async def explain(session: AsyncSession, principal: Principal, body: ResolveRequest) -> Resolution:
    """The routing decision an event with ``body.data`` would get, from the same context
    routing sees: its entities joined with the organisation's stored snapshots (an
    appointment brings its stored patient), so a rule on ``patient_tags`` matches here as it
    would when the event is posted. Nothing is read beyond the snapshots, nothing stored."""
    trigger = known_trigger(body.trigger_type)
    context = await join_snapshots(session, principal.org_id, body.data)
    return await resolve(session, principal.org_id, trigger.trigger_type, context)


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """One rule's part in a resolution: whether it matched, whether it decided, and why not."""

    rule: PathwayRule
    evaluation: Evaluation
    decided: bool
    failures: list[FailedCondition]


@dataclass(frozen=True, slots=True)
class Explanation:
    """A resolution explained: the base config, the result, and every rule in evaluation
    order with the reasons the ones that did not match failed."""

    resolution: Resolution
    base: BaseConfig
    context: dict[str, Any]
    verdicts: list[RuleVerdict]


async def explain_rules(
    session: AsyncSession, principal: Principal, body: ResolveRequest
) -> Explanation:
    """``explain`` with each rule's reasons: for every condition that failed, the path it
    read, what it expected and what the event's context held there."""
    trigger = known_trigger(body.trigger_type)
    context = await join_snapshots(session, principal.org_id, body.data)
    resolution = await resolve(session, principal.org_id, trigger.trigger_type, context)
    base = await effective_config(session, principal.org_id, trigger.trigger_type)
    rules = {
        r.id: r
        for r in await repository.rules_for_trigger(session, principal.org_id, trigger.trigger_type)
    }
    verdicts = []
    for evaluation in resolution.evaluations:
        rule = rules.get(evaluation.rule_id)
        if rule is None:  # pragma: no cover - deleted between the two reads of one request
            continue
        failures = failed_conditions(
            rule.conditions, evaluation.failed_conditions, trigger.named_fields, context
        )
        decided = evaluation.rule_id == resolution.matched_rule_id
        verdicts.append(RuleVerdict(rule, evaluation, decided, failures))
    return Explanation(resolution, base.config, context, verdicts)
