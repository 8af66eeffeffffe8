"""Pathway resolution throughput with 200 rules on one trigger type.

    python bench/perf/pathways.py [--rules 200] [--seconds 5] [--database-url URL]

Prints resolutions per second three ways: in memory on the routing fast path (first match,
no explanation), in memory with the full explanation `/resolve` returns, and through
`resolve()` with the rules read from the database each time (what dispatch pays).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from careflow.db import create_engine, create_sessionmaker
from careflow.migrate import upgrade_head
from careflow.pathways.catalog import TRIGGERS
from careflow.pathways.models import PathwayRule
from careflow.pathways.resolution import apply_rules, resolve

NOW = datetime(2025, 2, 15, tzinfo=UTC)
TYPE_IDS = [f"type_{i}" for i in range(50)]
TAGS = ["vip", "new", "insured", "minor", "returning"]
ORG = 4242


def make_rules(n: int, rng: random.Random) -> list[PathwayRule]:
    return [
        PathwayRule(
            id=f"rule_bench_{i}",
            organization_id=ORG,
            trigger_type="appointment.booked",
            rule_name=f"rule {i}",
            priority=i,
            conditions={
                "appointment_type_ids": rng.sample(TYPE_IDS, 2),
                "patient.tags": {"contains": rng.choice(TAGS)},
            },
            suggested_priority=rng.choice(["high", "urgent"]),
            enabled=True,
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        for i in range(n)
    ]


def make_contexts(n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "appointment": {"id": i, "appointment_type_id": rng.choice(TYPE_IDS)},
            "patient": {"id": i, "tags": rng.sample(TAGS, 2)},
        }
        for i in range(n)
    ]


def per_second(fn: Any, contexts: list[dict[str, Any]], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for ctx in contexts:
            fn(ctx)
        done += len(contexts)
    return done / (time.perf_counter() - started)


async def through_database(
    url: str, rules: list[PathwayRule], contexts: list[dict[str, Any]], seconds: float
) -> float:
    engine = create_engine(url)
    await upgrade_head(engine)
    maker = create_sessionmaker(engine)
    async with maker() as session, session.begin():
        for rule in rules:
            session.add(rule)
    done, started = 0, time.perf_counter()
    async with maker() as session:
        while time.perf_counter() - started < seconds:
            for ctx in contexts[:100]:
                await resolve(session, ORG, "appointment.booked", ctx, explain=False)
            done += 100
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    rng = random.Random(3)
    rules = make_rules(args.rules, rng)
    contexts = make_contexts(1000, rng)
    trigger = TRIGGERS["appointment.booked"]
    base = trigger.default_config

    for ctx in contexts[:200]:  # a fast wrong answer is worth nothing
        fast = apply_rules(trigger, base, rules, ctx, explain=False)
        assert fast.matched_rule_id == apply_rules(trigger, base, rules, ctx).matched_rule_id

    url = args.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    results = {
        "in memory, routing fast path": per_second(
            lambda c: apply_rules(trigger, base, rules, c, explain=False), contexts, args.seconds
        ),
        "in memory, with explanation (/resolve)": per_second(
            lambda c: apply_rules(trigger, base, rules, c), contexts, args.seconds
        ),
        f"resolve() reading rules from {url.split(':')[0]}": asyncio.run(
            through_database(url, rules, contexts, args.seconds)
        ),
    }
    matched = sum(
        apply_rules(trigger, base, rules, c, explain=False).matched_rule_id is not None
        for c in contexts
    )
    table = Table(title=f"Pathway resolution: {args.rules} rules on appointment.booked")
    table.add_column("path")
    table.add_column("resolutions/s", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}")
    Console().print(table)
    Console().print(f"{matched / len(contexts):.0%} of the sample events match a rule")


if __name__ == "__main__":
    main()
