"""The enabled rules of one trigger, as frozen snapshots the dispatcher and scheduler share.

Apart from rule CRUD (``service``) so that the modules that run rules (event dispatch,
time-based scheduling) can read them without importing what changes them. Contract: a
snapshot is plain values, safe to share between sessions and tasks; the set is cached per
(organisation, trigger) and rebuilt only after a write bumped its revision
(``kit.rulesets``), which every change in ``service`` does through ``ruleset_scope``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.automations import repository
from careflow.conditions.cache import compiled_conditions
from careflow.kit.rulesets import RevisionCache, current_revision


@dataclass(frozen=True, slots=True)
class RuleSnapshot:
    """A rule as the dispatcher needs it: plain values, safe to share between sessions."""

    id: int
    organization_id: int
    name: str
    version: int
    trigger_event: str
    trigger_config: dict[str, Any]
    conditions: dict[str, Any]
    actions: list[dict[str, Any]]


_enabled_rules: RevisionCache[tuple[RuleSnapshot, ...]] = RevisionCache()


def ruleset_scope(trigger_event: str) -> str:
    """The revision scope of one trigger's rules: bumped by every write to them."""
    return f"automation:{trigger_event}"


async def enabled_rules_for(
    session: AsyncSession, organization_id: int, trigger_event: str
) -> tuple[RuleSnapshot, ...]:
    """The organisation's enabled rules for one trigger, in id order (for the dispatcher).

    Per event this costs one primary-key read: the rules are loaded (and their conditions
    compiled) again only after a write to this trigger's rules changed the set's revision.
    """
    scope = ruleset_scope(trigger_event)
    revision = await current_revision(session, organization_id, scope)
    cached = _enabled_rules.get(organization_id, scope, revision)
    if cached is not None:
        return cached
    rows = await repository.enabled_for_trigger(session, organization_id, trigger_event)
    rules = tuple(
        RuleSnapshot(
            id=r.id,
            organization_id=r.organization_id,
            name=r.name,
            version=r.version,
            trigger_event=r.trigger_event,
            trigger_config=copy.deepcopy(r.trigger_config or {}),
            conditions=copy.deepcopy(r.conditions or {}),
            actions=copy.deepcopy(list(r.actions or [])),
        )
        for r in rows
    )
    for rule in rules:
        compiled_conditions(rule)  # compile now, once, rather than on the first event
    _enabled_rules.put(organization_id, scope, revision, rules)
    return rules
