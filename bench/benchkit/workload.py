"""The work that several benchmark scripts measure alike, so that their figures compare.

- The end-to-end workload (``perf/e2e.py``, ``perf/engine_cpu.py``, ``perf/statements.py``,
  ``perf/floors.py``, ``perf/ceiling.py``, ``peers/celery_drain.py``): one automation rule on
  ``patient.onboarded`` (``require_form`` then ``send_email``), one event per new patient, and
  an aiosmtpd sink that counts messages and their Message-IDs.
- careflow's app in process (``in_process_app``, ``post_workload``), for the scripts that
  count one process's CPU or statements.
- The conditions workload (``perf/conditions.py``, ``peers/zen_conditions.py``): realistic
  rules with a hand-written twin each, and the events they are evaluated on.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from benchkit.common import JWT_SECRET, free_port

# -- the end-to-end workload ----------------------------------------------------------------

RULE = {
    "name": "Welcome new patients",
    "description": "Consent form, then the welcome email",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {
            "type": "require_form",
            "form_template_id": 10,
            "blocking": True,
            "description": "Registration consent",
        },
        {"type": "send_email", "template": "welcome_patient"},
    ],
}


def onboarded(prefix: str, n: int) -> dict[str, Any]:
    """The ``n``-th ``patient.onboarded`` event of a run: a new patient each."""
    return {
        "event_id": f"{prefix}-{n}",
        "type": "patient.onboarded",
        "data": {
            "patient": {
                "id": f"{prefix}-p{n}",
                "email": f"patient{n}@example.com",
                "phone": f"+4477009{n % 100_000:05d}",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "timezone": "Europe/London",
            }
        },
    }


class Sink:
    """aiosmtpd handler: counts messages and Message-IDs (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.message_ids: Counter[str] = Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message_id = header_of(envelope.original_content or envelope.content, b"Message-ID")
        with self.lock:
            now = time.monotonic()
            self.first_at = self.first_at or now
            self.last_at = now
            self.messages += 1
            self.message_ids[message_id] += 1
        return "250 OK"


def header_of(content: bytes, name: bytes) -> str:
    """One unfolded header's value, read from the header block alone.

    The sink shares the two cores with what it measures: parsing each whole message into
    an ``email.message.Message`` for one header cost it about as much CPU as receiving it.
    """
    head = content.split(b"\r\n\r\n", 1)[0]
    prefix = name.lower() + b":"
    for line in head.split(b"\r\n"):
        if line[: len(prefix)].lower() == prefix:
            return line[len(prefix) :].strip().decode("ascii", "replace")
    return ""


def serve_sink(port: int, ready: Any, stop: Any) -> None:
    """A ``Sink`` on ``port`` until ``stop`` is set: the target of a child process, so that
    its CPU is counted apart from the measured process's."""
    from aiosmtpd.controller import Controller

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait(600)
    controller.stop()


@contextlib.contextmanager
def sink_running() -> Iterator[int]:
    """``serve_sink`` in a child process on a free port (yielded) for the ``with`` block."""
    port = free_port()
    ready, stop = mp.Event(), mp.Event()
    sink = mp.Process(target=serve_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(30)
    try:
        yield port
    finally:
        stop.set()
        sink.join(10)


def in_process_app(database_url: str, smtp_port: int) -> tuple[Any, Any, Any]:
    """careflow's settings, engine and app in this process, mailing the sink at ``smtp_port``."""
    from careflow.app import create_app
    from careflow.config import Settings
    from careflow.db import create_engine
    from careflow.kit.clock import SystemClock

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="development",
        database_url=database_url,
        jwt_secret=JWT_SECRET,
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        log_level="WARNING",
    )
    engine = create_engine(database_url)
    app = create_app(settings, engine=engine, clock=SystemClock(), migrate_sqlite=False)
    return settings, engine, app


async def post_workload(app: Any, settings: Any, events: int, prefix: str) -> None:
    """The end-to-end rule, then ``events`` ``patient.onboarded`` events, through the app."""
    from careflow.auth import issue_token

    headers = {"Authorization": f"Bearer {issue_token(settings, org_id=1, role='admin', sub='b')}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        created = await client.post("/v1/automations/rules", json=RULE, headers=headers)
        created.raise_for_status()
        for n in range(events):
            posted = await client.post("/v1/events", json=onboarded(prefix, n), headers=headers)
            posted.raise_for_status()


# -- the conditions workload ----------------------------------------------------------------

TYPES = ["video", "in_person", "phone"]
TAGS = ["vip", "new", "returning", "insured", "minor"]


def make_rules(
    n: int, rng: random.Random
) -> list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]]:
    """Realistic rules: a type match, a tag test, a numeric range; with a hand-written twin."""
    rules: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = []
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
    """Events to evaluate the rules on: a type, zero to three tags, an invoice amount."""
    return [
        {
            "appointment": {"id": i, "type": rng.choice(TYPES), "duration": 30},
            "patient": {"id": i, "tags": rng.sample(TAGS, rng.randint(0, 3))},
            "invoice": {"amount": rng.randint(0, 300)},
        }
        for i in range(n)
    ]
