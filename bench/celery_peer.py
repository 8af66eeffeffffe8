"""The Celery side of ``bench/compare_celery.py``: a no-op task app and its helper commands.

Runs in the peers' environment (``bench/.peers``) only, never in careflow's:

    bench/.peers/bin/python bench/celery_peer.py check|flush|enqueue N|wait N TIMEOUT STALL
    bench/.peers/bin/python -m celery -A celery_peer worker ...   (from bench/)

The broker is ``CELERY_PEER_BROKER`` (a Redis URL with a scratch db). Results are ignored;
each task INCRs one Redis counter, which is how the driver knows the queue is done.
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

app = Celery("celery_peer", broker=BROKER)
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


def check() -> None:
    foreign = [
        key for key in store().scan_iter(count=1000) if not key.decode().startswith(OWN_PREFIXES)
    ]
    if foreign:
        sys.exit(f"{BROKER} holds keys that are not the benchmark's (e.g. {foreign[:3]}): refusing")


def enqueue(n: int) -> None:
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
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
        enqueue(int(rest[0]))
    elif command == "wait":
        wait(int(rest[0]), float(rest[1]), float(rest[2]))
    else:
        sys.exit(f"unknown command {command!r}")
