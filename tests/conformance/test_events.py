"""Event ingestion (POST /v1/events, SPEC §3 and §9) and reading an event back.

The world's events were posted when it was built; their answers are checked here. Events
without an ``event_id`` and the Idempotency-Key replay are posted by this module.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.envelopes import (
    auto_error,
    body,
    data,
    describe,
    error_fields,
    timestamps_not_z,
)
from tests.conformance.server import Api
from tests.conformance.world import World


class TestWorldEvents:
    def test_post_event_202_accepted(self, world: World) -> None:
        r = world.responses["post_onboarded"]
        b = body(r) or {}
        ev = data(r)
        assert (
            r.status_code == 202
            and set(b) == {"data"}
            and set(ev) >= {"id", "event_id", "type", "status"}
            and ev.get("status") == "accepted"
            and ev.get("event_id") == "evt-onb-100"
            and isinstance(ev.get("id"), int)
        ), describe(r)

    def test_duplicate_event_id_answers_200_with_first_record(self, world: World) -> None:
        r = world.responses["post_onboarded_again"]
        assert r.status_code == 200 and data(r).get("id") == world.id_of("post_onboarded"), (
            describe(r)
        )

    def test_spec_appointment_booked_example_202(self, world: World) -> None:
        r = world.responses["post_appointment"]
        assert r.status_code == 202, describe(r)

    def test_string_ids_202(self, world: World) -> None:
        r = world.responses["post_string_ids"]
        assert r.status_code == 202, describe(r)

    def test_non_matching_appointment_202(self, world: World) -> None:
        r = world.responses["post_in_person"]
        assert r.status_code == 202, describe(r)

    def test_event_for_failing_mailbox_202(self, world: World) -> None:
        r = world.responses["post_failing_mailbox"]
        assert r.status_code == 202, describe(r)


class TestValidation:
    def test_missing_appointment_id_names_the_field(self, api: Api) -> None:
        event = {"type": "appointment.booked", "data": {"appointment": {"patient_id": 1}}}
        r = api("POST", "/v1/events", role="service", json=event)
        assert auto_error(r, 400, "validation_error") and any(
            "appointment.id" in f for f in error_fields(r)
        ), describe(r)

    def test_booked_without_patient_id_names_it(self, api: Api) -> None:
        event = {"type": "appointment.booked", "data": {"appointment": {"id": 9}}}
        r = api("POST", "/v1/events", role="service", json=event)
        assert auto_error(r, 400, "validation_error") and any(
            "patient_id" in f for f in error_fields(r)
        ), describe(r)

    def test_unknown_type_400(self, api: Api) -> None:
        r = api("POST", "/v1/events", role="service", json={"type": "bogus.type", "data": {}})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_non_json_400(self, api: Api) -> None:
        r = api(
            "POST",
            "/v1/events",
            role="service",
            content=b"not json",
            headers={"Content-Type": "application/json"},
        )
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_json_array_400(self, api: Api) -> None:
        r = api("POST", "/v1/events", role="service", json=[1, 2])
        assert auto_error(r, 400, "validation_error"), describe(r)


class TestDeduplication:
    def test_event_without_event_id_is_always_new(self, api: Api) -> None:
        event = {
            "type": "patient.onboarded",
            "data": {"patient": {"id": 104, "email": "nid@example.com"}},
        }
        r1 = api("POST", "/v1/events", role="service", json=event)
        r2 = api("POST", "/v1/events", role="service", json=event)
        assert (
            r1.status_code == 202
            and r2.status_code == 202
            and r1.json()["data"]["id"] != r2.json()["data"]["id"]
        ), f"{r1.status_code} {r2.status_code}"

    def test_idempotency_key_replay_header(self, api: Api) -> None:
        event = {"type": "patient.onboarded", "data": {"patient": {"id": 105}}}
        key = {"Idempotency-Key": "evt-idem"}
        r1 = api("POST", "/v1/events", role="service", json=event, headers=key)
        r2 = api("POST", "/v1/events", role="service", json=event, headers=key)
        assert r2.headers.get("idempotent-replayed") == "true" and r1.json() == r2.json(), (
            r2.headers
        )


class TestRead:
    def test_processed_event_shows_executions_and_episode(
        self, appointment_event_processed: dict[str, Any]
    ) -> None:
        evd = appointment_event_processed
        assert evd and "executions" in evd and evd.get("episode_id"), evd

    def test_event_timestamps_z(self, appointment_event_processed: dict[str, Any]) -> None:
        assert not timestamps_not_z(appointment_event_processed)

    def test_missing_event_404(self, api: Api) -> None:
        r = api("GET", "/v1/events/999999")
        assert auto_error(r, 404, "event_not_found"), describe(r)
