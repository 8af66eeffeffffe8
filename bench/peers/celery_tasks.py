"""The Celery side of ``bench/peers/celery_drain.py``: its task app and helper commands.

Runs in the peers' environment (``bench/.peers``) only, never in careflow's:

    bench/.peers/bin/python bench/peers/celery_tasks.py check|flush|enqueue N [noop|work]|wait N TIMEOUT STALL
    bench/.peers/bin/python bench/peers/celery_tasks.py setup-work     (the work task's tables)
    bench/.peers/bin/python -m celery -A celery_tasks worker ...   (from bench/peers/)

The broker is ``CELERY_PEER_BROKER`` (a Redis URL with a scratch db). Results are ignored;
each task INCRs one Redis counter, which is how the driver knows the queue is done.

Two tasks:
- ``noop``: nothing but the counter (a reference beside ``perf/ceiling.py``).
- ``work``: what careflow's end-to-end execution does, written by hand: in one transaction
  an execution row, a form and an episode; an email to the SMTP server at
  ``CELERY_PEER_SMTP`` (host:port) with a Message-ID of the execution; then the execution
  marked ``success`` in a second transaction. PostgreSQL at ``CELERY_PEER_PG`` (a libpq
  URL), schema ``celery_peer``. No rules, conditions, templates, routing, audit, retries
  or idempotency keys: a floor for the same side effects, not an equal of careflow.
"""

from __future__ import annotations

import json
import os
import sys
import time

import redis
from celery import Celery

BROKER = os.environ.get("CELERY_PEER_BROKER", "redis://127.0.0.1:6379/9")
DONE_KEY = "careflow-bench:celery-done"
# Keys that Celery, kombu and this script leave in the broker's db. Anything else there
# means the db is someone else's: ``check`` refuses to go on rather than flush it.
OWN_PREFIXES = ("careflow-bench:", "celery", "_kombu.", "unacked")

app = Celery("celery_tasks", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_store: redis.Redis | None = None


def store() -> redis.Redis:
    """One Redis connection per (forked) process."""
    global _store
    if _store is None:
        _store = redis.Redis.from_url(BROKER)
    return _store


@app.task(ignore_result=True)
def noop() -> None:
    store().incr(DONE_KEY)


_pg = None
_smtp = None
SENDER = "no-reply@careflow.local"
SCHEMA = """
DROP SCHEMA IF EXISTS celery_peer CASCADE;
CREATE SCHEMA celery_peer;
CREATE TABLE celery_peer.executions (
    id bigserial PRIMARY KEY, patient text NOT NULL, status text NOT NULL,
    executed_at timestamptz NOT NULL, finished_at timestamptz);
CREATE TABLE celery_peer.forms (
    id bigserial PRIMARY KEY, execution_id bigint NOT NULL REFERENCES celery_peer.executions,
    patient text NOT NULL, form_template_id int NOT NULL, status text NOT NULL,
    UNIQUE (patient, form_template_id));
CREATE TABLE celery_peer.episodes (
    id bigserial PRIMARY KEY, patient text NOT NULL, journey_type text NOT NULL,
    created_at timestamptz NOT NULL);
"""


def pg():  # type: ignore[no-untyped-def]
    """One PostgreSQL connection per (forked) worker process."""
    global _pg
    if _pg is None:
        import psycopg

        _pg = psycopg.connect(os.environ["CELERY_PEER_PG"])
    return _pg


def smtp():  # type: ignore[no-untyped-def]
    """One kept SMTP connection per (forked) worker process."""
    global _smtp
    if _smtp is None:
        import smtplib

        host, port = os.environ["CELERY_PEER_SMTP"].rsplit(":", 1)
        _smtp = smtplib.SMTP(host, int(port), local_hostname="bench")
    return _smtp


@app.task(ignore_result=True)
def work(n: int) -> None:
    patient, email = f"peer-p{n}", f"patient{n}@example.com"
    conn = pg()
    with conn.transaction():
        execution_id = conn.execute(
            "INSERT INTO celery_peer.executions (patient, status, executed_at)"
            " VALUES (%s, 'running', now()) RETURNING id",
            (patient,),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO celery_peer.forms (execution_id, patient, form_template_id, status)"
            " VALUES (%s, %s, 42, 'pending')",
            (execution_id, patient),
        )
        conn.execute(
            "INSERT INTO celery_peer.episodes (patient, journey_type, created_at)"
            " VALUES (%s, 'onboarding', now())",
            (patient,),
        )
    message = (
        f"From: {SENDER}\r\nTo: {email}\r\nSubject: Welcome to the practice\r\n"
        f"Message-ID: <peer-exec-{execution_id}@careflow>\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\n\r\n'
        f"Hello, and welcome. Your forms are waiting in the portal.\r\n"
    )
    smtp().sendmail(SENDER, [email], message.encode("ascii"))
    with conn.transaction():
        conn.execute(
            "UPDATE celery_peer.executions SET status = 'success', finished_at = now()"
            " WHERE id = %s",
            (execution_id,),
        )
    store().incr(DONE_KEY)


def setup_work() -> None:
    import psycopg

    with psycopg.connect(os.environ["CELERY_PEER_PG"], autocommit=True) as conn:
        conn.execute(SCHEMA)


def work_done() -> None:
    import psycopg

    with psycopg.connect(os.environ["CELERY_PEER_PG"]) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'success'),"
            " (SELECT count(*) FROM celery_peer.forms),"
            " (SELECT count(*) FROM celery_peer.episodes)"
            " FROM celery_peer.executions"
        ).fetchone()
    print(json.dumps({"success": row[0], "forms": row[1], "episodes": row[2]}))


def check() -> None:
    foreign = [
        key for key in store().scan_iter(count=1000) if not key.decode().startswith(OWN_PREFIXES)
    ]
    if foreign:
        sys.exit(f"{BROKER} holds keys that are not the benchmark's (e.g. {foreign[:3]}): refusing")


def enqueue(n: int, kind: str = "noop") -> None:
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            if kind == "work":
                work.apply_async(args=[i], producer=producer)
            else:
                noop.apply_async(producer=producer)
    seconds = time.perf_counter() - started
    queued = int(store().llen("celery"))
    print(json.dumps({"enqueued": n, "queued": queued, "enqueue_seconds": seconds}))


def wait(n: int, timeout: float, stall: float) -> None:
    """Poll the counter until ``n`` tasks ran, the timeout, or ``stall`` s without progress."""
    started = time.time()
    deadline = time.monotonic() + timeout
    first_at = done_at = None
    done, progressed = 0, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - progressed < stall:
        now_done = int(store().get(DONE_KEY) or 0)
        if now_done > done:
            done, progressed = now_done, time.monotonic()
            first_at = first_at or time.time()
        if done >= n:
            done_at = time.time()
            break
        time.sleep(0.01)
    print(
        json.dumps(
            {
                "done": done,
                "queued_left": int(store().llen("celery")),
                "waited_from": started,
                "first_at": first_at,
                "done_at": done_at,
            }
        )
    )


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "check":
        check()
    elif command == "flush":
        check()
        store().flushdb()
    elif command == "enqueue":
        enqueue(int(rest[0]), *rest[1:])
    elif command == "setup-work":
        setup_work()
    elif command == "work-done":
        work_done()
    elif command == "wait":
        wait(int(rest[0]), float(rest[1]), float(rest[2]))
    else:
        sys.exit(f"unknown command {command!r}")
