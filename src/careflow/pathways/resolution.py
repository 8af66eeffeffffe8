"""Which routing config an event gets: the base config, overridden by the first matching rule.

Pure of side effects: resolution reads rules and configs and stores nothing, so the
``/resolve`` endpoint can explain a decision with the same code that makes it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.conditions import CompiledCondition, ConditionError, compile_condition
from careflow.conditions.index import RuleIndex
from careflow.kit.rulesets import RevisionCache, current_revision
from careflow.pathways import repository
from careflow.pathways.catalog import CONFIG_FIELDS, TRIGGERS, BaseConfig, TriggerType
from careflow.pathways.models import PathwayConfig, PathwayRule


class UnknownTriggerError(LookupError):
    pass


def _trigger(trigger_type: str) -> TriggerType:
    trigger = TRIGGERS.get(trigger_type)
    if trigger is None:
        raise UnknownTriggerError(trigger_type)
    return trigger


# --- base configs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EffectiveConfig:
    """An organisation's base config for a trigger: its stored override, else the default."""

    trigger_type: str
    config: BaseConfig
    is_default: bool
    updated_at: datetime | None


def config_of(row: PathwayConfig) -> BaseConfig:
    return BaseConfig(
        creation_mode=row.creation_mode,
        inbox_visibility=row.inbox_visibility,
        journey_type=row.journey_type,
        suggested_assignment=row.suggested_assignment,
        suggested_priority=row.suggested_priority,
        expected_next_actor=row.expected_next_actor,
    )


def _effective(trigger: TriggerType, row: PathwayConfig | None) -> EffectiveConfig:
    if row is None:
        return EffectiveConfig(
            trigger.trigger_type, BaseConfig(**trigger.default_config), True, None
        )
    return EffectiveConfig(trigger.trigger_type, config_of(row), False, row.updated_at)


async def effective_config(
    session: AsyncSession, organization_id: int, trigger_type: str
) -> EffectiveConfig:
    trigger = _trigger(trigger_type)
    row = await repository.get_config(session, organization_id, trigger_type)
    return _effective(trigger, row)


async def effective_configs(session: AsyncSession, organization_id: int) -> list[EffectiveConfig]:
    """Every trigger type's base config, sorted by trigger type."""
    stored = {r.trigger_type: r for r in await repository.list_configs(session, organization_id)}
    return [_effective(TRIGGERS[t], stored.get(t)) for t in sorted(TRIGGERS)]


# --- compiled conditions ------------------------------------------------------------------


class CompiledConditionCache:
    """Compiled conditions keyed by (rule id, version): a saved rule is compiled once.

    Bounded (least recently used goes first) so a long-lived worker serving many
    organisations does not grow without limit. The version in the key is what makes an
    update visible: every change of a rule raises it.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, int], CompiledCondition] = OrderedDict()

    def get(
        self, rule: PathwayRule | RuleView, named_fields: Mapping[str, str]
    ) -> CompiledCondition:
        key = (rule.id, rule.version)
        compiled = self._items.get(key)
        if compiled is not None:
            self._items.move_to_end(key)
            return compiled
        compiled = compile_condition(rule.conditions, named_fields=named_fields)
        self._items[key] = compiled
        if len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


compiled_conditions = CompiledConditionCache()


# --- resolution ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    rule_id: str
    priority: int
    enabled: bool
    matched: bool
    failed_conditions: list[str]


@dataclass(frozen=True, slots=True)
class Resolution:
    trigger_type: str
    config: BaseConfig
    matched_rule_id: str | None
    evaluations: list[Evaluation]


def _evaluate(
    rule: PathwayRule | RuleView, trigger: TriggerType, context: Mapping[str, Any]
) -> Evaluation:
    if not rule.enabled:
        return Evaluation(rule.id, rule.priority, False, False, [])
    compiled = _compiled(rule, trigger)
    if compiled is None:
        # Only a row written around the API can hold a malformed condition: it never matches.
        return Evaluation(rule.id, rule.priority, True, False, ["conditions"])
    failed = compiled.failed_entries(context)
    return Evaluation(rule.id, rule.priority, True, not failed, failed)


def _first_match(
    trigger: TriggerType, rules: Sequence[PathwayRule | RuleView], context: Mapping[str, Any]
) -> PathwayRule | RuleView | None:
    """The routing hot path: whole-condition predicates only, stopping at the first match."""
    for rule in rules:
        if not rule.enabled:
            continue
        compiled = _compiled(rule, trigger)
        if compiled is not None and compiled.predicate(context):
            return rule
    return None


def _compiled(rule: PathwayRule | RuleView, trigger: TriggerType) -> CompiledCondition | None:
    if isinstance(rule, RuleView):
        return rule.compiled
    try:
        return compiled_conditions.get(rule, trigger.named_fields)
    except ConditionError:
        return None


def apply_rules(
    trigger: TriggerType,
    base: BaseConfig,
    rules: Sequence[PathwayRule | RuleView],
    context: Mapping[str, Any],
    *,
    explain: bool = True,
) -> Resolution:
    """First enabled matching rule (in priority order) overrides the base with its non-nulls.

    With ``explain``, every rule is evaluated and reported, also those after the winner
    (their ``matched`` says whether their conditions hold; ``matched_rule_id`` names the one
    that decided). Without it, evaluation stops at the winner and nothing is reported.
    """
    if explain:
        evaluations = [_evaluate(rule, trigger, context) for rule in rules]
        winner = next(
            (rule for rule, ev in zip(rules, evaluations, strict=True) if ev.matched), None
        )
    else:
        evaluations = []
        winner = _first_match(trigger, rules, context)
    return _decide(trigger, base, winner, evaluations)


def _decide(
    trigger: TriggerType,
    base: BaseConfig,
    winner: PathwayRule | RuleView | None,
    evaluations: list[Evaluation],
) -> Resolution:
    """The base config with the winning rule's non-null fields laid over it."""
    config = BaseConfig(**base)
    if winner is not None:
        for field in CONFIG_FIELDS:
            value = getattr(winner, field)
            if value is not None:
                config[field] = value  # type: ignore[literal-required]
    return Resolution(
        trigger_type=trigger.trigger_type,
        config=config,
        matched_rule_id=winner.id if winner is not None else None,
        evaluations=evaluations,
    )


async def resolve(
    session: AsyncSession,
    organization_id: int,
    trigger_type: str,
    context: Mapping[str, Any],
    *,
    explain: bool = True,
) -> Resolution:
    """Resolve the routing config of ``trigger_type`` for an event ``context``.

    Raises ``UnknownTriggerError`` for a trigger type outside the catalog. Routing passes
    ``explain=False``: it needs the decision, not the per-rule evaluations.
    """
    trigger = _trigger(trigger_type)
    ruleset = await _ruleset(session, organization_id, trigger_type)
    if explain:
        return apply_rules(trigger, ruleset.base, ruleset.rules, context)
    # Routing: the index tests only the rules this event can match, in priority order.
    position = ruleset.index.first_match(context)
    winner = ruleset.candidates[position] if position is not None else None
    return _decide(trigger, ruleset.base, winner, [])


@dataclass(frozen=True, slots=True)
class RuleView:
    """A pathway rule as resolution reads it: plain values, safe to share between sessions."""

    id: str
    priority: int
    enabled: bool
    version: int
    conditions: dict[str, Any] | None
    creation_mode: str | None
    inbox_visibility: str | None
    journey_type: str | None
    suggested_assignment: str | None
    suggested_priority: str | None
    expected_next_actor: str | None
    compiled: CompiledCondition | None  # None: a malformed stored condition, never matches

    @classmethod
    def of(cls, rule: PathwayRule, trigger: TriggerType) -> RuleView:
        try:
            compiled: CompiledCondition | None = compiled_conditions.get(rule, trigger.named_fields)
        except ConditionError:
            compiled = None
        return cls(
            id=rule.id,
            priority=rule.priority,
            enabled=rule.enabled,
            version=rule.version,
            conditions=copy.deepcopy(rule.conditions),
            creation_mode=rule.creation_mode,
            inbox_visibility=rule.inbox_visibility,
            journey_type=rule.journey_type,
            suggested_assignment=rule.suggested_assignment,
            suggested_priority=rule.suggested_priority,
            expected_next_actor=rule.expected_next_actor,
            compiled=compiled,
        )


def ruleset_scope(trigger_type: str) -> str:
    return f"pathway:{trigger_type}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """One trigger's base config and rules as cached: all rules (for explaining), and the
    enabled, well-formed ones behind an index (for routing)."""

    base: BaseConfig
    rules: tuple[RuleView, ...]
    candidates: tuple[RuleView, ...]
    index: RuleIndex


_rulesets: RevisionCache[RuleSet] = RevisionCache()


async def _ruleset(session: AsyncSession, organization_id: int, trigger_type: str) -> RuleSet:
    """The base config and rules of one trigger: one primary-key read while unchanged."""
    scope = ruleset_scope(trigger_type)
    revision = await current_revision(session, organization_id, scope)
    cached = _rulesets.get(organization_id, scope, revision)
    if cached is None:
        trigger = _trigger(trigger_type)
        base = await effective_config(session, organization_id, trigger_type)
        rows = await repository.rules_for_trigger(session, organization_id, trigger_type)
        rules = tuple(RuleView.of(r, trigger) for r in rows)
        candidates = tuple(r for r in rules if r.enabled and r.compiled is not None)
        index = RuleIndex(
            [r.compiled for r in candidates if r.compiled is not None], trigger.named_fields
        )
        cached = RuleSet(base.config, rules, candidates, index)
        _rulesets.put(organization_id, scope, revision, cached)
    return cached
