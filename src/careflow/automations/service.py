"""Automation rules: validation against the catalogs, CRUD, audit. Never commits.

Every write bumps the trigger's rule-set revision, so the snapshots the dispatcher reads
(``enabled``) are rebuilt; a change to a time-based rule enqueues the job that recomputes
its fires (``time_triggers.RESCHEDULE_RULE_KIND``, handled in ``scheduling``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.service import changed_fields, record
from careflow.auth import Principal
from careflow.automations import repository
from careflow.automations.catalog import (
    TEMPLATE_CHANNELS,
    TRIGGERS_BY_EVENT,
    ErrorList,
    validate_actions,
    validate_trigger,
)
from careflow.automations.enabled import ruleset_scope
from careflow.automations.models import AutomationRule
from careflow.automations.schemas import parse_body
from careflow.conditions import SaveChecks, validate_condition
from careflow.entities.catalog import context_entities
from careflow.errors import ValidationError, not_found
from careflow.jobs.queue import enqueue
from careflow.kit.pagination import PageParams
from careflow.kit.rulesets import bump
from careflow.kit.time_triggers import RESCHEDULE_RULE_KIND, TIME_TRIGGERS
from careflow.templates.service import template_exists

OBJECT_TYPE = "automation_rule"


def snapshot(rule: AutomationRule) -> dict[str, Any]:
    """The rule as an audit entry records it: its definition, no timestamps or counters."""
    return {
        "id": rule.id,
        "name": rule.name,
        "description": rule.description,
        "enabled": rule.enabled,
        "trigger_event": rule.trigger_event,
        "trigger_config": rule.trigger_config,
        "conditions": rule.conditions,
        "actions": rule.actions,
        "version": rule.version,
    }


async def _request_reschedule(
    session: AsyncSession, rule: AutomationRule, now: datetime
) -> None:
    """After a time-based rule is created, changed, enabled, disabled or deleted: a job that
    recomputes its fires (``scheduling``), committed with the change or not at all."""
    await enqueue(
        session,
        RESCHEDULE_RULE_KIND,
        {"rule_id": rule.id, "organization_id": rule.organization_id},
        run_at=now,
        now=now,
        organization_id=rule.organization_id,
        dedupe_key=f"reschedule:{rule.id}:{rule.version}:{now.isoformat()}",
    )


async def _template_errors(
    session: AsyncSession, organization_id: int, actions: Sequence[Any]
) -> ErrorList:
    errors: ErrorList = []
    for i, action in enumerate(actions):
        if not isinstance(action, Mapping):
            continue
        kind, key = action.get("type"), action.get("template")
        if not isinstance(kind, str) or not isinstance(key, str):
            continue
        channel = TEMPLATE_CHANNELS.get(kind)
        if channel is None:
            continue
        if not await template_exists(session, organization_id, key, channel):
            errors.append(
                {
                    "field": f"actions[{i}].template",
                    "message": f"unknown {channel} template '{key}'",
                }
            )
    return errors


def condition_checks(trigger_event: Any) -> SaveChecks:
    """What a rule on ``trigger_event`` may name in its conditions: the entities its events'
    context holds (an unknown trigger is reported by itself, so its paths go unchecked)."""
    trigger = TRIGGERS_BY_EVENT.get(trigger_event) if isinstance(trigger_event, str) else None
    if trigger is None:
        return SaveChecks(entities=None)
    return SaveChecks(entities=context_entities(trigger["entity_type"]))


async def _check_contents(
    session: AsyncSession,
    organization_id: int,
    fields: Mapping[str, Any],
    errors: ErrorList,
    *,
    templates: bool,
    trigger_event: Any,
    stored_conditions: Mapping[str, Any] | None = None,
) -> None:
    """Conditions and actions of a parsed body; problems are appended to ``errors``.

    The conditions are checked against ``trigger_event``, the rule's trigger once saved:
    those sent, else ``stored_conditions`` (an update that moves a rule to another trigger
    must not leave it with paths the new trigger's context lacks).

    ``templates`` checks that each message action names a template the organisation has.
    SPEC §4 makes an unknown template a validation error *at rule creation*, and the seed's
    update example names one (``new_template``) and answers 200: an update may name a
    template not added yet, and a send before it is added fails with "unknown ... template".
    """
    if "conditions" in fields:
        conditions = {} if fields["conditions"] is None else fields["conditions"]
    else:
        conditions = stored_conditions
    if conditions is not None:
        errors.extend(
            validate_condition(
                conditions, prefix="conditions", saving=condition_checks(trigger_event)
            )
        )
    if "actions" in fields:
        action_errors = validate_actions(fields["actions"])
        errors.extend(action_errors)
        if templates and isinstance(fields["actions"], list):
            errors.extend(await _template_errors(session, organization_id, fields["actions"]))


async def list_rules(
    session: AsyncSession,
    principal: Principal,
    *,
    trigger_event: str | None,
    enabled: bool | None,
    page: PageParams,
) -> tuple[Sequence[AutomationRule], int]:
    return await repository.list_page(
        session,
        principal.org_id,
        trigger_event=trigger_event,
        enabled=enabled,
        offset=page.offset,
        limit=page.limit,
    )


async def get_rule(session: AsyncSession, principal: Principal, rule_id: int) -> AutomationRule:
    rule = await repository.get(session, principal.org_id, rule_id)
    if rule is None:
        raise not_found("automation_rule")
    return rule


async def create_rule(
    session: AsyncSession, principal: Principal, payload: Any, *, now: datetime
) -> AutomationRule:
    """Validate a create body (every problem at once) and store the rule at version 1."""
    fields, errors = parse_body(payload, partial=False)
    trigger_config: dict[str, Any] = {}
    if "trigger_event" in fields:
        trigger_config, trigger_errors = validate_trigger(
            fields["trigger_event"], fields.get("trigger_config")
        )
        errors.extend(trigger_errors)
    await _check_contents(
        session,
        principal.org_id,
        fields,
        errors,
        templates=True,
        trigger_event=fields.get("trigger_event"),
    )
    if errors:
        raise ValidationError(details=errors)

    rule = AutomationRule(
        organization_id=principal.org_id,
        name=fields["name"],
        description=fields.get("description"),
        enabled=fields.get("enabled", True),
        trigger_event=fields["trigger_event"],
        trigger_config=trigger_config,
        conditions=fields.get("conditions") or {},
        actions=fields["actions"],
        version=1,
        created_at=now,
        updated_at=now,
    )
    await repository.add(session, rule)
    await bump(session, principal.org_id, ruleset_scope(rule.trigger_event))
    if rule.trigger_event in TIME_TRIGGERS:
        await _request_reschedule(session, rule, now)
    await record(
        session,
        principal,
        action="create",
        object_type=OBJECT_TYPE,
        object_id=rule.id,
        before=None,
        after=snapshot(rule),
        now=now,
    )
    return rule


async def update_rule(
    session: AsyncSession, principal: Principal, rule_id: int, payload: Any, *, now: datetime
) -> AutomationRule:
    """Change only the fields sent; the version rises on every update.

    A new ``trigger_event`` sent without a ``trigger_config`` starts from the new trigger's
    defaults: the old config described the old trigger (``hours_before`` means nothing to
    ``appointment.after_end``).
    """
    fields, errors = parse_body(payload, partial=True)
    if not isinstance(payload, dict):
        # Not an object: a 400 whatever the id names, as a body that is not JSON is.
        raise ValidationError(details=errors)
    rule = await repository.get(session, principal.org_id, rule_id, for_update=True)
    if rule is None:
        raise not_found("automation_rule")

    changes: dict[str, Any] = {
        k: v for k, v in fields.items() if k not in ("trigger_event", "trigger_config")
    }
    if "trigger_event" in fields or "trigger_config" in fields:
        event = fields.get("trigger_event", rule.trigger_event)
        if "trigger_config" in fields:
            config = fields["trigger_config"]
        elif event != rule.trigger_event:
            config = {}
        else:
            config = rule.trigger_config
        trigger_config, trigger_errors = validate_trigger(event, config)
        errors.extend(trigger_errors)
        changes["trigger_event"] = event
        changes["trigger_config"] = trigger_config
    new_trigger = changes.get("trigger_event", rule.trigger_event)
    await _check_contents(
        session,
        principal.org_id,
        fields,
        errors,
        templates=False,
        trigger_event=new_trigger,
        stored_conditions=rule.conditions if new_trigger != rule.trigger_event else None,
    )
    if errors:
        raise ValidationError(details=errors)

    if "conditions" in changes and changes["conditions"] is None:
        changes["conditions"] = {}
    before = snapshot(rule)
    was_time_based = rule.trigger_event in TIME_TRIGGERS
    old_trigger = rule.trigger_event
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.version = rule.version + 1
    rule.updated_at = now
    await session.flush()
    for trigger in {old_trigger, rule.trigger_event}:
        await bump(session, principal.org_id, ruleset_scope(trigger))
    if was_time_based or rule.trigger_event in TIME_TRIGGERS:
        await _request_reschedule(session, rule, now)
    old, new = changed_fields(before, snapshot(rule))
    await record(
        session,
        principal,
        action="update",
        object_type=OBJECT_TYPE,
        object_id=rule.id,
        before=old,
        after=new,
        now=now,
    )
    return rule


async def delete_rule(
    session: AsyncSession, principal: Principal, rule_id: int, *, now: datetime
) -> None:
    rule = await repository.get(session, principal.org_id, rule_id, for_update=True)
    if rule is None:
        raise not_found("automation_rule")
    before = snapshot(rule)
    await repository.delete(session, rule)
    await bump(session, principal.org_id, ruleset_scope(rule.trigger_event))
    if rule.trigger_event in TIME_TRIGGERS:
        # The reschedule finds the rule gone and drops its pending fires.
        await _request_reschedule(session, rule, now)
    await record(
        session,
        principal,
        action="delete",
        object_type=OBJECT_TYPE,
        object_id=rule_id,
        before=before,
        after=None,
        now=now,
    )


@dataclass(frozen=True, slots=True)
class RunStats:
    execution_count: int = 0
    last_executed_at: datetime | None = None


async def run_stats(
    session: AsyncSession, principal: Principal, rules: Sequence[AutomationRule]
) -> dict[int, RunStats]:
    """How often each rule ran (skipped executions excluded), and when it last did."""
    stats = await repository.run_stats(session, principal.org_id, [r.id for r in rules])
    return {rule_id: RunStats(count, last) for rule_id, (count, last) in stats.items()}
