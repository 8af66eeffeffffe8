"""Routing's fast path (first match, no explanation) decides exactly as /resolve explains."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from careflow.pathways.catalog import TRIGGERS
from careflow.pathways.models import PathwayRule
from careflow.pathways.resolution import apply_rules

NOW = datetime(2025, 2, 15, tzinfo=UTC)
TYPES = ["type_vip_consultation", "type_basic", "type_follow_up"]


def rules(rng: random.Random, n: int) -> list[PathwayRule]:
    out = []
    for priority in range(n):
        conditions = {"appointment_type_ids": rng.sample(TYPES, rng.randint(1, 2))}
        if rng.random() < 0.5:
            conditions["patient.tags"] = rng.choice(["vip", "new"])
        out.append(
            PathwayRule(
                id=f"rule_{priority}",
                organization_id=1,
                trigger_type="appointment.booked",
                rule_name=f"r{priority}",
                priority=priority,
                conditions=conditions,
                suggested_priority=rng.choice([None, "high", "urgent"]),
                suggested_assignment=rng.choice([None, "usr_a", "usr_b"]),
                enabled=rng.random() < 0.8,
                version=1,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return out


class TestFastPathAgreesWithExplanation:
    def test_same_decision_on_random_rule_sets(self) -> None:
        rng = random.Random(11)
        trigger = TRIGGERS["appointment.booked"]
        for _ in range(50):
            rule_set = rules(rng, rng.randint(0, 12))
            context = {
                "appointment": {"appointment_type_id": rng.choice(TYPES)},
                "patient": {"tags": rng.sample(["vip", "new"], rng.randint(0, 2))},
            }
            explained = apply_rules(trigger, trigger.default_config, rule_set, context)
            fast = apply_rules(trigger, trigger.default_config, rule_set, context, explain=False)
            assert fast.matched_rule_id == explained.matched_rule_id
            assert fast.config == explained.config
            assert fast.evaluations == []


class TestIndexedRoutingThroughTheDatabase:
    async def test_resolve_decides_as_it_explains(self, engine) -> None:  # type: ignore[no-untyped-def]
        from careflow.db import create_sessionmaker
        from careflow.kit.rulesets import bump
        from careflow.pathways.resolution import resolve, ruleset_scope

        rng = random.Random(5)
        maker = create_sessionmaker(engine)
        async with maker() as session, session.begin():
            for rule in rules(rng, 40):
                session.add(rule)
            await bump(session, 1, ruleset_scope("appointment.booked"))
        async with maker() as session:
            for _ in range(200):
                context = {
                    "appointment": {"appointment_type_id": rng.choice(TYPES)},
                    "patient": {"tags": rng.sample(["vip", "new"], rng.randint(0, 2))},
                }
                fast = await resolve(session, 1, "appointment.booked", context, explain=False)
                full = await resolve(session, 1, "appointment.booked", context)
                assert (fast.matched_rule_id, fast.config) == (full.matched_rule_id, full.config)
