"""The message log (GET /v1/messages): what was sent, to whom, with the provider's id."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.envelopes import auto_error, body, describe, page_meta_ok, timestamps_not_z
from tests.conformance.server import Api
from tests.conformance.world import WorkerResults


@pytest.fixture(scope="module")
def messages(api: Api, worker_results: WorkerResults) -> Any:
    return api("GET", "/v1/messages")


def first_message(messages: Any) -> dict[str, Any]:
    listed = (body(messages) or {}).get("data") or []
    return listed[0] if listed else {}


def test_list_envelope(messages: Any) -> None:
    assert page_meta_ok(body(messages)), describe(messages)


def test_message_fields(messages: Any) -> None:
    m0 = first_message(messages)
    assert {"id", "channel", "recipient", "template", "status", "execution_id"} <= set(m0) and any(
        "provider" in k for k in m0
    ), m0


def test_timestamps_z(messages: Any) -> None:
    assert not timestamps_not_z(body(messages)), timestamps_not_z(body(messages))


def test_get_message_200_data(api: Api, messages: Any) -> None:
    r = api("GET", f"/v1/messages/{first_message(messages).get('id', 0)}")
    assert r.status_code == 200 and set(body(r) or {}) == {"data"}, describe(r)


def test_missing_message_404(api: Api) -> None:
    r = api("GET", "/v1/messages/999999")
    assert auto_error(r, 404, "message_not_found"), describe(r)
