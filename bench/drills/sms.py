"""Fault drill 7: the SMS provider accepts a message but careflow never hears back.

    python bench/drills/sms.py [--database-url URL] [--messages 1000] [--fault-share 0.1]
                               [--stall-seconds 20] [--delivered-after 2] [--seed N]

careflow (``serve --no-worker`` + two workers) sends SMS through Twilio's Messages API,
here a fake of it on 127.0.0.1 (``benchkit/twilio.py``) that answers as Twilio's published
API does and posts status callbacks ``sent`` then ``delivered`` to each message's
``StatusCallback``, signed with ``X-Twilio-Signature``. ``CAREFLOW_PUBLIC_URL`` is the API's
address, so the callbacks reach careflow.

1. One rule: ``patient.onboarded`` → ``send_sms`` (``welcome_patient``). Quiet hours are
   switched off and the hourly cap raised, so every message is due at once.
2. ``--messages`` events, each with its own patient and phone (``07700 900000`` onwards,
   written the national way: careflow sends them in E.164).
3. For ``--fault-share`` of the phones, chosen at random, the provider creates the message
   on the first request and then, alternately, holds its answer for ``--stall-seconds``
   (longer than careflow's 15 s wait for Twilio) or closes the connection unanswered.
4. Checks (exit 1 when one is broken): exactly one message created at the provider per
   action (0 duplicates); every careflow message holds the provider's SID of that message
   and its final status ``delivered``; every execution ``success``; no job dead.
   Reported: the faults, the provider's list requests (careflow's lookups), the SIDs
   careflow adopted (messages whose create answer it never got), time to finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import httpx

from benchkit.common import loadavg
from benchkit.drill import Cluster, Verdict, common_args, console, header
from benchkit.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio

RULE = {
    "name": "Onboarding: welcome text",
    "description": "SMS drill rule",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [{"type": "send_sms", "template": "welcome_patient"}],
}


def phone(n: int) -> tuple[str, str]:
    """The patient's phone as the host writes it, and in E.164 (Ofcom's drama range)."""
    return f"07700 900{n:03d}", f"+447700900{n:03d}"


def event(n: int) -> dict[str, Any]:
    return {
        "event_id": f"sms-{n}",
        "type": "patient.onboarded",
        "data": {
            "patient": {
                "id": f"sms-p{n}",
                "phone": phone(n)[0],
                "first_name": "Ada",
                "last_name": "Lovelace",
                "timezone": "Europe/London",
            }
        },
    }


async def post_all(cluster: Cluster, n: int, concurrency: int = 8) -> tuple[int, Counter[Any]]:
    """POST every event, retrying one (same event_id) until it is answered 2xx."""
    statuses: Counter[Any] = Counter()
    accepted = 0
    todo = iter(range(n))
    headers = {"Authorization": f"Bearer {cluster.service}"}
    async with httpx.AsyncClient(base_url=cluster.base, headers=headers, timeout=30) as client:

        async def loop() -> None:
            nonlocal accepted
            for k in todo:
                for _ in range(20):
                    try:
                        response = await client.post("/v1/events", json=event(k))
                        statuses[response.status_code] += 1
                        if response.status_code in (200, 202):
                            accepted += 1
                            break
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return accepted, statuses


async def wait_delivered(cluster: Cluster, fake: FakeTwilio, n: int, within: float) -> float:
    """Wait until the provider has no callback left to send and careflow holds ``n``
    messages ``delivered`` (or ``within`` s passed); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        delivered = await cluster.db.val(
            "SELECT count(*) FROM messages WHERE channel = 'sms' AND status = 'delivered'"
        )
        if fake.callbacks_pending() == 0 and int(delivered) >= n:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def run(args: argparse.Namespace) -> Verdict:
    rng = random.Random(args.seed)
    numbers = [phone(n)[1] for n in range(args.messages)]
    faulty = set(rng.sample(numbers, round(args.messages * args.fault_share)))
    fake = FakeTwilio(
        faulty=faulty, stall_seconds=args.stall_seconds, delivered_after=args.delivered_after
    )
    fake.start()
    cluster = Cluster(args.database_url, pgbouncer=args.pgbouncer, rule=RULE)
    cluster.extra_env = {
        "CAREFLOW_SMS_PROVIDER": "twilio",
        "CAREFLOW_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "CAREFLOW_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CAREFLOW_TWILIO_FROM": FROM_NUMBER,
        "CAREFLOW_TWILIO_BASE_URL": fake.base_url,
        "CAREFLOW_PUBLIC_URL": cluster.base,
        "CAREFLOW_QUIET_HOURS_START": "0",
        "CAREFLOW_QUIET_HOURS_END": "0",
        "CAREFLOW_SMS_HOURLY_LIMIT": str(args.messages * 10),
        "CAREFLOW_JOB_BACKOFF_BASE_SECONDS": str(args.backoff_base),
    }
    verdict = Verdict()
    try:
        await cluster.astart(2)
        started = time.monotonic()
        accepted, statuses = await post_all(cluster, args.messages)
        posted = time.monotonic() - started
        waited = await cluster.wait_all_finished(accepted, within=args.timeout, stall=args.stall)
        finished = time.monotonic() - started
        await wait_delivered(cluster, fake, accepted, within=args.settle)
        settled = time.monotonic() - started
        seen = fake.snapshot()
        db = cluster.db

        verdict.add(
            "events posted / accepted",
            f"{args.messages:,} / {accepted:,} in {posted:.0f} s"
            f" ({', '.join(f'{k}: {v:,}' for k, v in sorted(statuses.items(), key=str))})",
        )
        verdict.add(
            "first create requests faulted (answer held past the timeout / connection closed)",
            f"{seen['faults']['stalled']} / {seen['faults']['dropped']}"
            f" of {len(faulty)} chosen phones",
        )
        verdict.add("create requests at the provider", f"{seen['create_requests']:,}")
        verdict.add(
            "list requests at the provider (careflow's lookups)", f"{seen['list_requests']:,}"
        )

        creates: Counter[str] = seen["creates"]
        duplicates = sum(c - 1 for c in creates.values() if c > 1)
        verdict.add("messages created at the provider", f"{sum(creates.values()):,}")
        verdict.check("duplicate creates at the provider (same careflow message)", duplicates, 0)
        verdict.check(
            "messages created with no careflow message id in their StatusCallback",
            creates.get("(no StatusCallback)", 0) + creates.get("(none)", 0),
            0,
        )
        by_phone = Counter(m["to"] for m in seen["messages"])
        verdict.check("phones texted more than once", sum(1 for c in by_phone.values() if c > 1), 0)

        sid_of = {}
        for m in seen["messages"]:
            sid_of[m["callback"].split("message_id=", 1)[-1]] = m["sid"]
        rows = await db.fetch(
            "SELECT id, recipient, provider_message_id, status, attempts FROM messages"
            " WHERE channel = 'sms'"
        )
        statuses_db = Counter(r["status"] for r in rows)
        verdict.add(
            "careflow messages by status",
            ", ".join(f"{k} {v:,}" for k, v in sorted(statuses_db.items())),
        )
        verdict.check("careflow SMS messages / accepted events", len(rows), accepted)
        wrong_sid = sum(1 for r in rows if r["provider_message_id"] != sid_of.get(r["id"]))
        verdict.check("messages not holding the provider's SID of their message", wrong_sid, 0)
        verdict.check(
            "messages whose final status is not delivered",
            sum(1 for r in rows if r["status"] != "delivered"),
            0,
        )
        adopted = sum(
            1 for r in rows if r["recipient"] in faulty and r["provider_message_id"] is not None
        )
        verdict.add("SIDs adopted (create answer never received)", f"{adopted:,}")
        verdict.add(
            "messages by attempts",
            ", ".join(
                f"{k}: {v:,}" for k, v in sorted(Counter(r["attempts"] for r in rows).items())
            ),
        )
        verdict.add(
            "status callbacks sent (sent / delivered)",
            f"{seen['callbacks_sent']['sent']:,} / {seen['callbacks_sent']['delivered']:,}",
        )
        verdict.add(
            "careflow's answers to the callbacks",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(seen["callback_answers"].items(), key=str)),
        )

        executions = {
            r[0]: int(r[1])
            for r in await db.fetch("SELECT status, count(*) FROM executions GROUP BY status")
        }
        verdict.add(
            "executions by status", ", ".join(f"{k} {v:,}" for k, v in sorted(executions.items()))
        )
        verdict.check(
            "executions not success", sum(executions.values()) - executions.get("success", 0), 0
        )
        verdict.check("executions / accepted events", sum(executions.values()), accepted)
        jobs = {
            r[0]: int(r[1])
            for r in await db.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        }
        verdict.check("jobs left dead", jobs.get("dead", 0), 0)
        held = await db.val(
            "SELECT count(*) FROM jobs WHERE kind = 'twilio_status_held' AND status = 'queued'"
        )
        verdict.add("status callbacks still held for their message", f"{int(held):,}")
        verdict.add(
            "jobs left queued / running", f"{jobs.get('queued', 0)} / {jobs.get('running', 0)}"
        )
        retried = await db.val("SELECT count(*) FROM execution_actions WHERE attempts > 1")
        verdict.add("actions that needed more than one attempt", f"{int(retried):,}")
        verdict.add(
            "time: posting / all executions finished / all delivered",
            f"{posted:.0f} s / {finished:.0f} s / {settled:.0f} s (waited {waited:.0f} s)",
        )
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        verdict.add(
            "load average (1 min) at start / at check", f"{cluster.load_before} / {loadavg()}"
        )
        return verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        fake.stop()
        console.print(f"logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.set_defaults(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/careflow_smsdrill"
    )
    parser.add_argument("--messages", type=int, default=1000, help="events, one SMS each")
    parser.add_argument(
        "--fault-share", type=float, default=0.1, help="share of first create requests faulted"
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=20.0,
        help="how long a held answer is held (careflow waits 15 s for Twilio)",
    )
    parser.add_argument(
        "--delivered-after", type=float, default=2.0, help="seconds from sent to delivered"
    )
    parser.add_argument("--backoff-base", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="max wait after posting")
    parser.add_argument("--stall", type=float, default=120.0)
    parser.add_argument(
        "--settle", type=float, default=60.0, help="max wait for the last status callbacks"
    )
    args = parser.parse_args()
    header("Drill 7: SMS provider answers lost", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print(f"Drill 7: {args.messages:,} SMS, {args.fault_share:.0%} of first answers lost")
    if args.json:
        print(json.dumps({"drill": "sms", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
