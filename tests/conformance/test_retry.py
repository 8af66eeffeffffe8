"""A send that keeps failing, then its retry (SPEC §6, §10), in an organisation of its own.

The SMTP sink refuses ``fail@example.com`` until ``retried`` allows it. The rule fires on
patient.first_login, which a patient's first patient.logged_in event triggers once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import body, data, describe, poll
from tests.conformance.seed import FAILING_MAILBOX, RETRY_ORG
from tests.conformance.server import Api, RefusingSink
from tests.conformance.world import ExecutionsFor

FAIL_RULE = {
    "name": "Fail mail",
    "trigger_event": "patient.first_login",
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}


def logged_in(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "patient.logged_in",
        "data": {"patient": {"id": 103, "email": FAILING_MAILBOX}},
    }


@dataclass
class Failed:
    rule_id: Any
    execution: dict[str, Any]  # once failed ({} if not within the deadline)
    second_login_processed: bool


@pytest.fixture(scope="module")
def failed(api: Api, executions_for: ExecutionsFor) -> Failed:
    """The rule's execution after the refused send's last attempt, then a second login."""
    rule_id = data(api("POST", "/v1/automations/rules", org=RETRY_ORG, json=FAIL_RULE)).get("id")
    api("POST", "/v1/events", role="service", org=RETRY_ORG, json=logged_in("evt-login-fail"))

    def done() -> dict[str, Any] | None:
        ex = executions_for(rule_id, org=RETRY_ORG)
        return ex[0] if ex and ex[0]["status"] in ("failure", "partial_failure") else None

    execution = poll(done, 40) or {}
    second = api("POST", "/v1/events", role="service", org=RETRY_ORG, json=logged_in("evt-login-2"))
    pk = data(second).get("id") or 0

    def processed() -> bool:
        r = api("GET", f"/v1/events/{pk}", org=RETRY_ORG)
        return data(r).get("status") == "processed"

    return Failed(rule_id, execution, bool(poll(processed, 15)))


@pytest.fixture(scope="module")
def retried(api: Api, failed: Failed, smtp_sink: RefusingSink) -> httpx.Response:
    """The mailbox is back; the admin's retry of the failed execution."""
    smtp_sink.allow(FAILING_MAILBOX)
    return api(
        "POST", f"/v1/automations/executions/{failed.execution.get('id', 0)}/retry", org=RETRY_ORG
    )


def test_first_login_fires_once_per_patient(failed: Failed, executions_for: ExecutionsFor) -> None:
    ex = executions_for(failed.rule_id, org=RETRY_ORG)
    assert failed.second_login_processed and len(ex) == 1, ex


def test_failing_email_ends_in_failure_after_retries(
    failed: Failed, executions_for: ExecutionsFor
) -> None:
    assert failed.execution.get("status") == "failure", executions_for(
        failed.rule_id, org=RETRY_ORG
    )


def test_failure_entry_carries_error(failed: Failed) -> None:
    acts = failed.execution.get("actions_executed") or [{}]
    assert acts[0].get("status") == "failure" and acts[0].get("error"), acts


def test_retry_as_specialist_403(api: Api, failed: Failed) -> None:
    r = api(
        "POST",
        f"/v1/automations/executions/{failed.execution.get('id', 0)}/retry",
        role="specialist",
        org=RETRY_ORG,
    )
    assert r.status_code == 403, r.status_code


def test_retry_accepted(retried: httpx.Response) -> None:
    assert retried.status_code in (200, 202) and set(body(retried) or {}) == {"data"}, describe(
        retried
    )


def test_retried_execution_ends_success(api: Api, failed: Failed, retried: httpx.Response) -> None:
    path = f"/v1/automations/executions/{failed.execution.get('id', 0)}"
    assert poll(lambda: data(api("GET", path, org=RETRY_ORG)).get("status") == "success", 30)


def test_retried_email_arrived(retried: httpx.Response, smtp_sink: RefusingSink) -> None:
    assert poll(lambda: smtp_sink.count_to(FAILING_MAILBOX) >= 1, 10)
