"""Condition evaluation beside a peer: careflow vs zen-engine on the same rules and events.

    python bench/compare_conditions.py [--rules 1000] [--events 2000]

zen-engine is installed into its own environment (``bench/.peers``, created on first use),
never into careflow's. Both sides get the same rules (zen-engine as expressions compiled
once) and the same events, must agree on every answer, and are timed on the same machine in
the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from typing import Any

from bench_conditions import make_events, make_rules  # type: ignore[import-not-found]
from rich.console import Console
from rich.table import Table

from careflow.conditions import compile_condition
from careflow.conditions.index import RuleIndex

PEERS = Path(__file__).parent / ".peers"

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


def peer_python() -> Path:
    python = PEERS / "bin" / "python"
    if not python.exists():
        venv.create(PEERS, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "zen-engine==2.1.3"], check=True)
    return python


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    rules = make_rules(args.rules, rng)
    events = make_events(args.events, rng)
    compiled = [compile_condition(c).predicate for c, _ in rules]
    index = RuleIndex([compile_condition(c) for c, _ in rules])
    total = len(events) * len(rules)

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"expressions": [to_zen(c) for c, _ in rules], "events": events}, spec)
    out = subprocess.run(
        [str(peer_python()), "-c", PEER_SCRIPT, spec.name],
        check=True,
        capture_output=True,
        text=True,
    )
    Path(spec.name).unlink()
    peer = json.loads(out.stdout)
    ours = [sum(1 for p in compiled if p(ctx)) for ctx in events[:200]]
    if ours != peer["matches"]:
        sys.exit("careflow and zen-engine disagree on which rules match: not comparable")

    def run_compiled() -> None:
        for ctx in events:
            for predicate in compiled:
                predicate(ctx)

    def run_indexed() -> None:
        for ctx in events:
            index.matches(ctx)

    results = {
        "careflow rule index (effective)": rate(run_indexed, total),
        "careflow compiled": rate(run_compiled, total),
        "zen-engine 2.1.3, compiled expressions": peer["rate"],
    }
    table = Table(title=f"Conditions beside zen-engine: {args.rules} rules x {args.events} events")
    table.add_column("evaluator")
    table.add_column("evaluations/s", justify="right")
    table.add_column("vs zen-engine", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / peer['rate']:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
