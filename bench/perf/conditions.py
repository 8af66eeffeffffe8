"""Condition evaluation throughput: an organisation with N rules on one trigger.

    python bench/bench_conditions.py [--rules 1000] [--events 2000]

Prints evaluations per second for careflow's compiled closures, the reference
interpreter, and closures written by hand for the same rules (the ceiling).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from careflow.conditions import compile_condition, evaluate
from careflow.conditions.index import RuleIndex

TYPES = ["video", "in_person", "phone"]
TAGS = ["vip", "new", "returning", "insured", "minor"]


def make_rules(
    n: int, rng: random.Random
) -> list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]]:
    """Realistic rules: a type match, a tag test, a numeric range; with a hand-written twin."""
    rules = []
    for _ in range(n):
        kind = rng.choice(TYPES)
        tag = rng.choice(TAGS)
        low = rng.randint(0, 200)
        cond = {
            "appointment.type": kind,
            "patient.tags": {"contains": tag},
            "invoice.amount": {"gte": low},
        }

        def hand(ctx: dict[str, Any], kind: str = kind, tag: str = tag, low: int = low) -> bool:
            a = ctx.get("appointment") or {}
            p = ctx.get("patient") or {}
            i = ctx.get("invoice") or {}
            amount = i.get("amount")
            return (
                a.get("type") == kind
                and tag in (p.get("tags") or [])
                and isinstance(amount, int | float)
                and amount >= low
            )

        rules.append((cond, hand))
    return rules


def make_events(n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "appointment": {"id": i, "type": rng.choice(TYPES), "duration": 30},
            "patient": {"id": i, "tags": rng.sample(TAGS, rng.randint(0, 3))},
            "invoice": {"amount": rng.randint(0, 300)},
        }
        for i in range(n)
    ]


def rate(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    rules = make_rules(args.rules, rng)
    events = make_events(args.events, rng)

    started = time.perf_counter()
    compiled = [compile_condition(c).predicate for c, _ in rules]
    compile_ms = (time.perf_counter() - started) * 1000

    def run_compiled() -> int:
        for ctx in events:
            for pred in compiled:
                pred(ctx)
        return len(events) * len(compiled)

    def run_hand() -> int:
        for ctx in events:
            for _, hand in rules:
                hand(ctx)
        return len(events) * len(rules)

    index = RuleIndex([compile_condition(c) for c, _ in rules])

    def run_indexed() -> int:
        # Same answers as testing every rule; counted as every rule evaluated.
        for ctx in events:
            index.matches(ctx)
        return len(events) * len(rules)

    interp_events = events[: max(1, len(events) // 10)]

    def run_interpreter() -> int:
        for ctx in interp_events:
            for cond, _ in rules:
                evaluate(cond, ctx)
        return len(interp_events) * len(rules)

    # Agreement first: a fast wrong answer is worth nothing.
    for ctx in events[:200]:
        for (cond, hand), pred in zip(rules, compiled, strict=True):
            assert pred(ctx) == hand(ctx) == evaluate(cond, ctx)
        assert index.matches(ctx) == [i for i, (_, hand) in enumerate(rules) if hand(ctx)]

    results = {
        "careflow rule index (effective)": rate(run_indexed),
        "careflow compiled closures": rate(run_compiled),
        "hand-written closures": rate(run_hand),
        "reference interpreter": rate(run_interpreter),
    }
    table = Table(title=f"Condition evaluation: {args.rules} rules x {args.events} events")
    table.add_column("evaluator")
    table.add_column("evaluations/s", justify="right")
    table.add_column("vs hand-written", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / results['hand-written closures']:.2f}x")
    Console().print(table)
    Console().print(
        f"compiling {args.rules} rules took {compile_ms:.1f} ms (once per rule version)"
    )


if __name__ == "__main__":
    main()
