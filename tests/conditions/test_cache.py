from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from careflow.automations.models import AutomationRule
from careflow.conditions import ConditionError
from careflow.conditions.cache import clear_cache, compiled_conditions

T = datetime(2025, 1, 1, tzinfo=UTC)


def make_rule(rule_id: int = 1, version: int = 1, conditions: Any = None) -> AutomationRule:
    return AutomationRule(
        id=rule_id,
        organization_id=1,
        name="r",
        trigger_event="appointment.booked",
        trigger_config={},
        conditions={"appointment.type": "video"} if conditions is None else conditions,
        actions=[],
        version=version,
        enabled=True,
        created_at=T,
        updated_at=T,
    )


class TestCompiledConditions:
    def setup_method(self) -> None:
        clear_cache()

    def test_compiled_once_per_version(self) -> None:
        rule = make_rule()
        first = compiled_conditions(rule)
        assert compiled_conditions(rule) is first
        assert first({"appointment": {"type": "video"}})
        assert not first({"appointment": {"type": "phone"}})

        rule.version = 2
        rule.conditions = {"appointment.type": "phone"}
        second = compiled_conditions(rule)
        assert second is not first
        assert second({"appointment": {"type": "phone"}})

    def test_a_reused_id_never_gets_another_rules_conditions(self) -> None:
        compiled_conditions(make_rule(conditions={"appointment.type": "video"}))
        other = compiled_conditions(make_rule(conditions={"appointment.type": "phone"}))
        assert other({"appointment": {"type": "phone"}})

    def test_mutating_the_rule_does_not_change_the_compiled_closures(self) -> None:
        rule = make_rule(conditions={"appointment.type": ["video"]})
        compiled = compiled_conditions(rule)
        rule.conditions["appointment.type"].append("phone")
        assert not compiled({"appointment": {"type": "phone"}})

    def test_empty_conditions_match(self) -> None:
        assert compiled_conditions(make_rule(conditions={}))({})

    def test_malformed_stored_conditions_raise(self) -> None:
        with pytest.raises(ConditionError):
            compiled_conditions(make_rule(conditions={"a": {"bogus": 1}}))

    def test_bounded(self) -> None:
        from careflow.conditions import cache as module

        for i in range(module.MAX_ENTRIES + 10):
            compiled_conditions(make_rule(rule_id=i, conditions={}))
        assert len(module._cache) == module.MAX_ENTRIES
