"""Segment membership (GET /v1/segments/{id}/members) after the world's update_segment rule."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import body, describe, page_meta_ok, poll
from tests.conformance.server import Api
from tests.conformance.world import World


@pytest.fixture(scope="module")
def members(api: Api, world: World) -> httpx.Response:
    """Segment 7 once patient 100 is a member (or as it is after the deadline)."""

    def listed() -> httpx.Response | None:
        r = api("GET", "/v1/segments/7/members")
        ids = [x.get("patient_id") for x in (body(r) or {}).get("data") or []]
        return r if 100 in ids else None

    return poll(listed, 15) or api("GET", "/v1/segments/7/members")


def test_members_envelope(members: httpx.Response) -> None:
    assert page_meta_ok(body(members)), describe(members)


def test_member_fields(members: httpx.Response) -> None:
    listed: list[dict[str, Any]] = (body(members) or {}).get("data") or []
    assert (
        listed
        and all(set(x) >= {"patient_id", "added_at"} for x in listed)
        and 100 in [x["patient_id"] for x in listed]
    ), listed
