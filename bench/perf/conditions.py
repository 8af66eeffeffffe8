"""Condition evaluation throughput: an organisation with N rules on one trigger.

    python bench/perf/conditions.py [--rules 1000] [--events 2000]

Prints evaluations per second for careflow's compiled closures, the reference
interpreter, and closures written by hand for the same rules (the ceiling).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.workload import make_events, make_rules
from careflow.conditions import compile_condition, evaluate
from careflow.conditions.index import RuleIndex


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
