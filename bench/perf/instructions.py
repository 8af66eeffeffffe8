"""Instructions per execution, counted by callgrind: an A/B measure the machine's noise cannot move.

    python bench/perf/instructions.py --database-url URL [--tree SRC ...] [--small 20] [--large 60]

On this project's shared two-core machine, rates and even CPU seconds move by ±30 % with
the other work on it, so a change worth 5 % cannot be seen in ``perf/e2e.py``. Callgrind
(``valgrind --tool=callgrind``) counts the instructions a process executes instead, and
that count is the same from run to run whatever else the machine does.

For each ``--tree`` (a ``src`` directory, put first on ``PYTHONPATH``; default: this
checkout's), this runs ``perf/engine_cpu.py`` under callgrind twice, with ``--small`` and
``--large`` events (one round each, after a 20-event warm-up), and divides the difference
of the two totals by the difference of the event counts. What is left is the instructions
of careflow's own process for one execution of the end-to-end rule: its ingestion, its
dispatch with ``require_form`` and its ``send_email`` step, start-up and warm-up cancelled
out. PostgreSQL's and the SMTP sink's instructions are not in it. Under callgrind a run is
~50 times slower: the default sizes take ~2 minutes a tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.common import BENCH_DIR


def _instructions(tree: Path, database_url: str, events: int, workdir: Path) -> int:
    out = workdir / f"callgrind.{events}.%p"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [
        *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
        *(sys.executable, str(BENCH_DIR / "perf" / "engine_cpu.py")),
        *("--database-url", database_url, "--events", str(events)),
        *("--rounds", "1", "--warmup", "20"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"perf/engine_cpu.py failed under callgrind:\n{done.stderr[-3000:]}")
    # The largest output is careflow's process (the SMTP sink is a smaller forked child).
    files = sorted(workdir.glob(f"callgrind.{events}.*"), key=lambda p: p.stat().st_size)
    for line in files[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {files[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL (a bench database)")
    parser.add_argument("--tree", action="append", type=Path, help="a src directory")
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=60)
    args = parser.parse_args()
    trees = args.tree or [BENCH_DIR.parent / "src"]

    table = Table(title="Instructions per execution of careflow's process (callgrind)")
    for column in ("tree", f"{args.small} events", f"{args.large} events", "per execution"):
        table.add_column(column, justify="left" if column == "tree" else "right")
    first: float | None = None
    for tree in trees:
        with tempfile.TemporaryDirectory(prefix="careflow-callgrind-") as workdir:
            small = _instructions(tree.resolve(), args.database_url, args.small, Path(workdir))
            large = _instructions(tree.resolve(), args.database_url, args.large, Path(workdir))
        per = (large - small) / (args.large - args.small)
        first = first or per
        change = "" if per == first else f" ({per / first - 1:+.1%})"
        table.add_row(str(tree), f"{small:,}", f"{large:,}", f"{per / 1e6:.2f} M{change}")
    Console().print(table)


if __name__ == "__main__":
    main()
