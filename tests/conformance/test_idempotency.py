"""Idempotency-Key on creating automation rules (SPEC §10): a replay answers the first answer
again and says so; the same key with another body is refused.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conformance.envelopes import body, describe
from tests.conformance.seed import SCRATCH
from tests.conformance.server import Api

KEY = {"Idempotency-Key": "probe-auto-1"}
RULE = {
    "name": "Idem",
    "trigger_event": "invoice.overdue",
    "enabled": False,
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}


@pytest.fixture(scope="module")
def first_and_replay(api: Api) -> tuple[httpx.Response, httpx.Response]:
    first = api("POST", "/v1/automations/rules", org=SCRATCH, json=RULE, headers=KEY)
    return first, api("POST", "/v1/automations/rules", org=SCRATCH, json=RULE, headers=KEY)


def test_first_answer_is_not_marked_replayed(
    first_and_replay: tuple[httpx.Response, httpx.Response],
) -> None:
    first, _ = first_and_replay
    assert "idempotent-replayed" not in first.headers, dict(first.headers)


def test_replay_answers_the_first_answer(
    first_and_replay: tuple[httpx.Response, httpx.Response],
) -> None:
    first, replay = first_and_replay
    assert (
        first.status_code == 201
        and replay.status_code == 201
        and first.json() == replay.json()
        and replay.headers.get("idempotent-replayed") == "true"
    ), f"{first.status_code} {replay.status_code} {replay.headers.get('idempotent-replayed')}"


def test_key_reused_with_another_body_is_422(
    api: Api, first_and_replay: tuple[httpx.Response, httpx.Response]
) -> None:
    r = api(
        "POST", "/v1/automations/rules", org=SCRATCH, json=dict(RULE, name="Other"), headers=KEY
    )
    assert r.status_code == 422 and (body(r) or {}).get("error", {}).get("code") in (
        "idempotency_key_reused",
    ), describe(r)
