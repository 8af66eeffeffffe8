"""Concurrent duplicates (SPEC §3, §10): one event per event_id and one rule per
Idempotency-Key, however many identical requests race; in an organisation of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conformance.envelopes import body, describe
from tests.conformance.seed import CONCURRENCY_ORG, onboarded_event
from tests.conformance.server import Api

RACERS = 8


def race(send: Callable[[], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(lambda _: send(), range(RACERS)))


def test_same_event_id_concurrently_is_one_event(api: Api) -> None:
    event = onboarded_event("evt-dup-conc", 110, "dup@example.com")
    rs = race(lambda: api("POST", "/v1/events", role="service", org=CONCURRENCY_ORG, json=event))
    codes = sorted(r.status_code for r in rs)
    ids = {(body(r) or {}).get("data", {}).get("id") for r in rs}
    assert codes == [200] * (RACERS - 1) + [202] and len(ids) == 1, codes


def test_same_idempotency_key_concurrently_is_one_rule(api: Api) -> None:
    rule = {"trigger_type": "invoice.paid", "rule_name": "conc", "priority": 3}
    rs = race(
        lambda: api(
            "POST",
            "/v1/pathway-rules",
            org=CONCURRENCY_ORG,
            json=rule,
            headers={"Idempotency-Key": "conc-key"},
        ),
    )
    answers_ok = all(
        r.status_code == 201
        or (
            r.status_code == 409
            and (body(r) or {}).get("error", {}).get("code") == "IDEMPOTENCY_KEY_IN_USE"
        )
        for r in rs
    )
    made = {(body(r) or {}).get("data", {}).get("id") for r in rs if r.status_code == 201}
    assert answers_ok and len(made) == 1, [
        (r.status_code, (body(r) or {}).get("error", {}).get("code")) for r in rs
    ]
    listed = api(
        "GET", "/v1/pathway-rules", org=CONCURRENCY_ORG, params={"trigger_type": "invoice.paid"}
    )
    assert listed.status_code == 200 and listed.json()["meta"]["total"] == 1, describe(listed)
