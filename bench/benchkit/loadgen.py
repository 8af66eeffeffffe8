"""HTTP load generator for ``POST /v1/events``: C connections for T seconds, one process.

    python bench/benchkit/loadgen.py --url http://127.0.0.1:8000/v1/events --token T \\
                                     [--concurrency 64] [--seconds 15] [--warmup 2] [--prefix run1]

Each request is a realistic ``appointment.booked`` event (appointment + patient entities)
with a unique ``event_id``. Prints one JSON line: requests, errors, statuses, latency
percentiles (ms) and req/s over the measured window (warm-up excluded). Every connection
stops at the deadline; a request in flight then is waited for, up to the client timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

APPOINTMENT_TYPES = ["video", "in_person", "phone"]
TIMEZONES = ["Europe/London", "Europe/Paris", "America/New_York", "UTC"]


def event_body(prefix: str, n: int, rng: random.Random) -> dict[str, Any]:
    patient_id = rng.randint(1, 20_000)
    starts = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=15 * rng.randint(0, 50_000))
    return {
        "event_id": f"{prefix}-{n}",
        "type": "appointment.booked",
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "appointment": {
                "id": f"{prefix}-a{n}",
                "patient_id": patient_id,
                "type": rng.choice(APPOINTMENT_TYPES),
                "appointment_type_id": f"type_{rng.randint(1, 12)}",
                "starts_at": starts.isoformat().replace("+00:00", "Z"),
                "ends_at": (starts + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                "practitioner_id": rng.randint(1, 40),
            },
            "patient": {
                "id": patient_id,
                "email": f"patient{patient_id}@example.com",
                "phone": f"+4477009{patient_id:05d}",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "timezone": rng.choice(TIMEZONES),
                "tags": rng.sample(["vip", "new", "returning", "insured"], 2),
            },
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.prefix)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    counter = 0
    completed = 0
    started = time.monotonic()
    measure_from = started + args.warmup
    deadline = measure_from + args.seconds

    async with httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(args.timeout), headers=headers
    ) as client:

        async def connection() -> None:
            nonlocal counter, completed
            while time.monotonic() < deadline:
                counter += 1
                body = event_body(args.prefix, counter, rng)
                t = time.monotonic()
                try:
                    response = await client.post(args.url, json=body)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                done = time.monotonic()
                completed += 1
                if measure_from <= t and done <= deadline:
                    latencies.append(done - t)
                    statuses[status] += 1

        await asyncio.gather(*(connection() for _ in range(args.concurrency)))

    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return 1000 * latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

    ok = sum(v for k, v in statuses.items() if k in ("200", "201", "202"))
    return {
        "requests": len(latencies),
        "all_requests": completed,  # warm-up and tail included: for CPU per request
        "ok": ok,
        "errors": len(latencies) - ok,
        "statuses": dict(statuses),
        "req_per_s": len(latencies) / args.seconds,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * latencies[-1] if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--prefix", default="evt")
    args = parser.parse_args()
    if not args.url.startswith("http://127.0.0.1:"):
        raise SystemExit("loadgen only sends traffic to http://127.0.0.1")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
