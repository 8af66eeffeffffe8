"""Episodes (pathway routing's output, SPEC §8): list, routed fields, events, filters, PATCH."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import (
    auto_error,
    body,
    data,
    describe,
    page_meta_ok,
    timestamps_not_z,
)
from tests.conformance.server import Api
from tests.conformance.world import PathwayWorld

EPISODE_KEYS = {
    "id",
    "patient_id",
    "journey_type",
    "status",
    "inbox_visibility",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
    "assignee",
    "priority",
    "created_at",
    "updated_at",
}


@pytest.fixture(scope="module")
def episodes(api: Api, appointment_event_processed: dict[str, Any]) -> httpx.Response:
    return api("GET", "/v1/episodes")


@pytest.fixture(scope="module")
def episode_id(appointment_event_processed: dict[str, Any], episodes: httpx.Response) -> Any:
    """The episode of the SPEC §9 appointment.booked (patient 100)."""
    listed = (body(episodes) or {}).get("data") or []
    return appointment_event_processed.get("episode_id") or (listed[0]["id"] if listed else 0)


class TestList:
    def test_envelope(self, episodes: httpx.Response) -> None:
        assert page_meta_ok(body(episodes)), describe(episodes)

    def test_fields(self, episodes: httpx.Response) -> None:
        listed = (body(episodes) or {}).get("data") or []
        assert listed and all(set(x) >= EPISODE_KEYS for x in listed), listed[:1]

    def test_timestamps_z(self, episodes: httpx.Response) -> None:
        assert not timestamps_not_z(body(episodes)), timestamps_not_z(body(episodes))

    def test_filter_patient_id(self, api: Api, episodes: httpx.Response) -> None:
        r = api("GET", "/v1/episodes", params={"patient_id": 100})
        got = (body(r) or {}).get("data") or []
        assert r.status_code == 200 and got and all(x["patient_id"] == 100 for x in got), describe(
            r
        )

    def test_filter_suggested_priority(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("GET", "/v1/episodes", params={"suggested_priority": "urgent"})
        got = (body(r) or {}).get("data") or []
        assert r.status_code == 200 and all(x["suggested_priority"] == "urgent" for x in got), (
            describe(r)
        )


class TestEpisode:
    def test_vip_episode_routed_by_the_seed_rule(
        self, api: Api, pathway_world: PathwayWorld
    ) -> None:
        vep = data(api("GET", f"/v1/episodes/{pathway_world.vip_processed.get('episode_id') or 0}"))
        assert (
            vep.get("suggested_priority") == "urgent"
            and vep.get("suggested_assignment") == "usr_team_lead"
        ), vep

    def test_get_episode_with_events(self, api: Api, episode_id: Any) -> None:
        r = api("GET", f"/v1/episodes/{episode_id}")
        epd = data(r)
        events = epd.get("events")
        assert (
            r.status_code == 200
            and isinstance(events, list)
            and events
            and set(events[0]) >= {"event_id", "type", "occurred_at"}
        ), epd

    def test_patch_episode(self, api: Api, episode_id: Any) -> None:
        r = api(
            "PATCH",
            f"/v1/episodes/{episode_id}",
            role="specialist",
            json={"status": "closed", "assignee": "usr_x", "priority": "low"},
        )
        epd = data(r)
        assert (
            r.status_code == 200
            and epd.get("status") == "closed"
            and epd.get("assignee") == "usr_x"
            and epd.get("priority") == "low"
        ), describe(r)

    def test_patch_bad_status_400(self, api: Api, episode_id: Any) -> None:
        r = api("PATCH", f"/v1/episodes/{episode_id}", json={"status": "weird"})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_patch_non_json_400(self, api: Api, episode_id: Any) -> None:
        r = api(
            "PATCH",
            f"/v1/episodes/{episode_id}",
            content=b"{",
            headers={"Content-Type": "application/json"},
        )
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_missing_episode_404(self, api: Api) -> None:
        r = api("GET", "/v1/episodes/999999")
        assert auto_error(r, 404, "episode_not_found"), describe(r)
