"""Condition evaluation beside a peer: careflow vs zen-engine on the same rules and events.

    python bench/peers/zen_conditions.py [--rules 1000] [--events 2000] [--json]

zen-engine is installed into its own environment (``bench/.peers``, created on first use),
never into careflow's. Both sides get the same rules (zen-engine as expressions compiled
once) and the same events, must agree on every answer, and are timed on the same machine in
the same run, beside the hand-written closures of ``benchkit.workload.make_rules``.
``bench/compare.py`` runs this script with ``--json`` for its conditions rows.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.common import peer_python
from benchkit.workload import make_events, make_rules
from careflow.conditions import compile_condition
from careflow.conditions.index import RuleIndex

PEER_SCRIPT = """
import json, sys, time
import zen
spec = json.load(open(sys.argv[1]))
compiled = [zen.compile_expression(e) for e in spec["expressions"]]
events = spec["events"]
matches = [sum(1 for c in compiled if c.evaluate(ctx)) for ctx in events[:200]]
started = time.perf_counter()
for ctx in events:
    for c in compiled:
        c.evaluate(ctx)
elapsed = time.perf_counter() - started
print(json.dumps({"rate": len(events) * len(compiled) / elapsed, "matches": matches}))
"""


def to_zen(condition: dict[str, Any]) -> str:
    """The benchmark's rule shape as a zen-engine expression (values JSON-quoted)."""
    kind = json.dumps(condition["appointment.type"])
    tag = json.dumps(condition["patient.tags"]["contains"])
    low = condition["invoice.amount"]["gte"]
    return (
        f"appointment.type == {kind} and contains(patient.tags, {tag}) and invoice.amount >= {low}"
    )


def rate(fn: Any, count: int) -> float:
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


def measure(rules_n: int, events_n: int) -> dict[str, float]:
    """Evaluations/s of careflow, hand-written closures and zen-engine on the same work.

    The hand-written closures are ``bench/perf/conditions.py``'s twins of the same rules.
    """
    rng = random.Random(7)
    rules = make_rules(rules_n, rng)
    events = make_events(events_n, rng)
    compiled = [compile_condition(c).predicate for c, _ in rules]
    index = RuleIndex([compile_condition(c) for c, _ in rules])
    total = len(events) * len(rules)

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"expressions": [to_zen(c) for c, _ in rules], "events": events}, spec)
    try:
        out = subprocess.run(
            [str(peer_python("zen")), "-c", PEER_SCRIPT, spec.name],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        Path(spec.name).unlink()
    peer = json.loads(out.stdout)
    ours = [sum(1 for p in compiled if p(ctx)) for ctx in events[:200]]
    hands = [sum(1 for _, hand in rules if hand(ctx)) for ctx in events[:200]]
    if not ours == hands == peer["matches"]:
        raise RuntimeError("careflow, hand-written and zen-engine disagree on which rules match")

    def run_compiled() -> None:
        for ctx in events:
            for predicate in compiled:
                predicate(ctx)

    def run_indexed() -> None:
        for ctx in events:
            index.matches(ctx)

    def run_hand() -> None:
        for ctx in events:
            for _, hand in rules:
                hand(ctx)

    return {
        "index": rate(run_indexed, total),
        "compiled": rate(run_compiled, total),
        "hand_written": rate(run_hand, total),
        "zen": peer["rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    rates = measure(args.rules, args.events)
    labels = {
        "index": "careflow rule index (effective)",
        "compiled": "careflow compiled",
        "hand_written": "hand-written closures",
        "zen": "zen-engine 2.1.3, compiled expressions",
    }
    table = Table(title=f"Conditions beside zen-engine: {args.rules} rules x {args.events} events")
    table.add_column("evaluator")
    table.add_column("evaluations/s", justify="right")
    table.add_column("vs zen-engine", justify="right")
    for key, value in rates.items():
        table.add_row(labels[key], f"{value:,.0f}", f"{value / rates['zen']:.2f}x")
    Console().print(table)
    if args.json:
        print(
            json.dumps({"bench": "conditions", "rules": args.rules, "events": args.events, **rates})
        )


if __name__ == "__main__":
    main()
