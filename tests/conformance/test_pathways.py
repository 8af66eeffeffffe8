"""The Pathway Rules API (seed 001): triggers, configs, rules CRUD with idempotency and
conflicts, lists and filters, resolve, delete, and the order of its checks (auth, role, body).

The seed's rules of organisation 1 come from ``pathway_world``. The read of the seed rule as
created comes before its PATCH through the fixtures (``as_created`` ← ``patched``); the
delete is of a rule in a scratch organisation, so the world's lists keep their five rules.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import (
    REQ_ID,
    RULE_ID,
    body,
    data,
    describe,
    offset_meta_ok,
    pathway_error,
    timestamps_not_z,
)
from tests.conformance.seed import CONFIG_FIELDS, OTHER, PATHWAY_RULE_FIELDS, SCRATCH
from tests.conformance.server import Api
from tests.conformance.world import PATHWAY_SEED_KEY, PATHWAY_SEED_RULE, PathwayWorld

SEED = PATHWAY_SEED_RULE
NOT_JSON: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}
MISSING_RULE = "rule_00000000-0000-0000-0000-000000000000"


def has_request_id_meta(r: httpx.Response) -> bool:
    b = body(r) or {}
    return set(b) == {"data", "meta"} and bool(REQ_ID.match(str(b["meta"].get("request_id"))))


class TestTriggers:
    def test_list_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-triggers")
        assert offset_meta_ok(body(r)), describe(r)

    def test_cover_event_types(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-triggers", params={"limit": 100})
        trig = {t.get("trigger_type") for t in (body(r) or {}).get("data", [])}
        wanted = {"appointment.booked", "invoice.created", "patient.onboarded", "form.completed"}
        assert wanted <= trig, sorted(trig)

    def test_appointment_booked_condition_field(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-triggers", params={"limit": 100})
        trig = {t.get("trigger_type"): t for t in (body(r) or {}).get("data", [])}
        ab = trig.get("appointment.booked", {})
        fields = ab.get("condition_fields")
        names = [c.get("name") for c in fields] if isinstance(fields, list) else list(fields or {})
        assert "appointment_type_ids" in names, ab


@pytest.fixture(scope="module")
def booked_config(api: Api) -> httpx.Response:
    return api("GET", "/v1/pathway-configs/appointment.booked")


class TestConfigs:
    def test_list_envelope(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-configs")
        assert offset_meta_ok(body(r)), describe(r)

    def test_get_data_and_request_id(self, booked_config: httpx.Response) -> None:
        r = booked_config
        assert r.status_code == 200 and has_request_id_meta(r), describe(r)

    def test_six_fields_none_null(self, booked_config: httpx.Response) -> None:
        cfg = data(booked_config)
        assert all(cfg.get(k) is not None for k in CONFIG_FIELDS), cfg

    def test_unknown_trigger_404(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-configs/not.a.trigger")
        assert pathway_error(r, 404, "NOT_FOUND"), describe(r)

    def test_put_200(self, api: Api, booked_config: httpx.Response) -> None:
        new = {k: data(booked_config).get(k) for k in CONFIG_FIELDS} | {
            "suggested_priority": "high"
        }
        r = api("PUT", "/v1/pathway-configs/appointment.booked", json=new)
        assert r.status_code == 200 and data(r).get("suggested_priority") == "high", describe(r)

    def test_put_invalid_enum_400(self, api: Api, booked_config: httpx.Response) -> None:
        new = {k: data(booked_config).get(k) for k in CONFIG_FIELDS} | {
            "suggested_priority": "ASAP"
        }
        r = api("PUT", "/v1/pathway-configs/appointment.booked", json=new)
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)


class TestCreate:
    def test_201_data_and_request_id(self, pathway_world: PathwayWorld) -> None:
        r = pathway_world.created
        assert r.status_code == 201 and has_request_id_meta(r), describe(r)

    def test_fields_exactly_the_rule_object(self, pathway_world: PathwayWorld) -> None:
        pr = pathway_world.rule
        assert set(pr) == PATHWAY_RULE_FIELDS, sorted(set(pr) ^ PATHWAY_RULE_FIELDS)

    def test_id_is_rule_uuid(self, pathway_world: PathwayWorld) -> None:
        assert RULE_ID.match(str(pathway_world.rule_id)), pathway_world.rule_id

    def test_nulls_inherit_and_enabled_default(self, pathway_world: PathwayWorld) -> None:
        pr = pathway_world.rule
        assert (
            pr.get("creation_mode") is None
            and pr.get("inbox_visibility") is None
            and pr.get("journey_type") is None
            and pr.get("expected_next_actor") is None
            and pr.get("enabled") is True
        ), pr

    def test_timestamps_z(self, pathway_world: PathwayWorld) -> None:
        pr = pathway_world.rule
        assert not timestamps_not_z(pr) and "created_at" in pr, timestamps_not_z(pr)

    def test_extra_rules_created(self, pathway_world: PathwayWorld) -> None:
        assert len(pathway_world.extras) == 4
        for r in pathway_world.extras:
            assert r.status_code == 201, describe(r)

    def test_vip_booking_accepted(self, pathway_world: PathwayWorld) -> None:
        r = pathway_world.vip_event
        assert r.status_code == 202, describe(r)


class TestCreateRefusals:
    def test_idempotency_key_replay(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api(
            "POST", "/v1/pathway-rules", json=SEED, headers={"Idempotency-Key": PATHWAY_SEED_KEY}
        )
        assert (
            r.status_code == 201
            and r.json().get("data") == pathway_world.rule
            and r.headers.get("idempotent-replayed") == "true"
        ), f"{r.status_code} {r.headers.get('idempotent-replayed')}"

    def test_idempotency_key_with_another_body_422(
        self, api: Api, pathway_world: PathwayWorld
    ) -> None:
        r = api(
            "POST",
            "/v1/pathway-rules",
            json=dict(SEED, priority=9),
            headers={"Idempotency-Key": PATHWAY_SEED_KEY},
        )
        assert pathway_error(r, 422, "IDEMPOTENCY_KEY_REUSED"), describe(r)

    def test_duplicate_trigger_type_and_priority_409(
        self, api: Api, pathway_world: PathwayWorld
    ) -> None:
        r = api("POST", "/v1/pathway-rules", json=dict(SEED, rule_name="dup"))
        assert pathway_error(r, 409, "CONFLICT"), describe(r)

    def test_negative_priority_400(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", json=dict(SEED, priority=-1))
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_missing_rule_name_400(self, api: Api) -> None:
        r = api(
            "POST", "/v1/pathway-rules", json={"trigger_type": "appointment.booked", "priority": 3}
        )
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_suggested_priority_enum_400(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", json=dict(SEED, priority=4, suggested_priority="asap"))
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_expected_next_actor_enum_400(self, api: Api) -> None:
        r = api(
            "POST", "/v1/pathway-rules", json=dict(SEED, priority=4, expected_next_actor="robot")
        )
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("journey_type", "Not A Slug"),
            ("inbox_visibility", "sometimes"),
            ("creation_mode", "maybe"),
        ],
    )
    def test_enum_or_slug_field_400(self, api: Api, field: str, value: str) -> None:
        r = api("POST", "/v1/pathway-rules", json=dict(SEED, priority=4, **{field: value}))
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_non_json_body_400(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", content=b"{oops", **NOT_JSON)
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_json_array_body_400(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", json=[SEED])
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_anonymous_non_json_401_auth_before_body(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", role=None, content=b"{oops", **NOT_JSON)
        assert pathway_error(r, 401, "UNAUTHORIZED"), describe(r)

    def test_specialist_create_403(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", role="specialist", json=SEED)
        assert pathway_error(r, 403, "FORBIDDEN"), describe(r)

    def test_specialist_non_json_403_role_before_body(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules", role="specialist", content=b"{oops", **NOT_JSON)
        assert pathway_error(r, 403, "FORBIDDEN"), describe(r)


def rule_order(r: httpx.Response) -> list[tuple[str, int]]:
    return [(x["trigger_type"], x["priority"]) for x in (body(r) or {}).get("data", [])]


class TestList:
    def test_envelope(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("GET", "/v1/pathway-rules")
        assert offset_meta_ok(body(r)), describe(r)

    def test_sorted_by_trigger_type_then_priority(
        self, api: Api, pathway_world: PathwayWorld
    ) -> None:
        order = rule_order(api("GET", "/v1/pathway-rules"))
        assert order == sorted(order) and len(order) == 5, order

    def test_total(self, api: Api, pathway_world: PathwayWorld) -> None:
        meta = (body(api("GET", "/v1/pathway-rules")) or {}).get("meta", {})
        assert meta.get("total") == 5, meta

    def test_limit_and_offset(self, api: Api, pathway_world: PathwayWorld) -> None:
        order = rule_order(api("GET", "/v1/pathway-rules"))
        r = api("GET", "/v1/pathway-rules", params={"limit": 2, "offset": 1})
        assert offset_meta_ok(body(r), 2, 1) and rule_order(r) == sorted(order)[1:3], describe(r)

    @pytest.mark.parametrize(
        ("params", "expect"),
        [
            ({"trigger_type": "invoice.created"}, 2),
            ({"enabled": "false"}, 1),
            ({"enabled": "true"}, 4),
            ({"enabled": "disabled"}, 1),
            ({"enabled": "enabled"}, 4),
            ({"creation_mode": "reuse_open"}, 1),
            ({"suggested_priority": "urgent"}, 1),
        ],
    )
    def test_filter(
        self, api: Api, pathway_world: PathwayWorld, params: dict[str, str], expect: int
    ) -> None:
        r = api("GET", "/v1/pathway-rules", params=params)
        assert r.status_code == 200 and len(r.json().get("data", [])) == expect, describe(r)

    def test_limit_101_400(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules", params={"limit": 101})
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_negative_offset_400(self, api: Api) -> None:
        r = api("GET", "/v1/pathway-rules", params={"offset": -1})
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)


@pytest.fixture(scope="module")
def as_created(api: Api, pathway_world: PathwayWorld) -> httpx.Response:
    """GET of the seed rule before any PATCH."""
    return api("GET", f"/v1/pathway-rules/{pathway_world.rule_id}")


@pytest.fixture(scope="module")
def patched(api: Api, pathway_world: PathwayWorld, as_created: httpx.Response) -> httpx.Response:
    return api(
        "PATCH",
        f"/v1/pathway-rules/{pathway_world.rule_id}",
        json={"rule_name": "VIP renamed", "suggested_assignment": None},
    )


class TestReadAndPatch:
    def test_get_data_and_request_id(
        self, as_created: httpx.Response, pathway_world: PathwayWorld
    ) -> None:
        r = as_created
        assert (
            r.status_code == 200
            and set(body(r) or {}) == {"data", "meta"}
            and data(r) == pathway_world.rule
        ), describe(r)

    def test_missing_rule_404(self, api: Api) -> None:
        r = api("GET", f"/v1/pathway-rules/{MISSING_RULE}")
        assert pathway_error(r, 404, "NOT_FOUND"), describe(r)

    def test_other_organisations_rule_404(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("GET", f"/v1/pathway-rules/{pathway_world.rule_id}", org=OTHER)
        assert pathway_error(r, 404, "NOT_FOUND"), describe(r)

    def test_patch_200(self, patched: httpx.Response) -> None:
        d = data(patched)
        assert (
            patched.status_code == 200
            and d.get("rule_name") == "VIP renamed"
            and d.get("suggested_assignment") is None
            and d.get("suggested_priority") == "urgent"
        ), describe(patched)

    def test_patch_trigger_type_400(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api(
            "PATCH",
            f"/v1/pathway-rules/{pathway_world.rule_id}",
            json={"trigger_type": "invoice.created"},
        )
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_patch_duplicate_priority_409(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("PATCH", f"/v1/pathway-rules/{pathway_world.rule_id}", json={"priority": 2})
        assert pathway_error(r, 409, "CONFLICT"), describe(r)

    def test_patch_non_json_400(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("PATCH", f"/v1/pathway-rules/{pathway_world.rule_id}", content=b"nope", **NOT_JSON)
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_patch_json_array_400(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("PATCH", f"/v1/pathway-rules/{pathway_world.rule_id}", json=["x"])
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)

    def test_patch_negative_priority_400(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api("PATCH", f"/v1/pathway-rules/{pathway_world.rule_id}", json={"priority": -5})
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)


VIP_BOOKING = {
    "trigger_type": "appointment.booked",
    "data": {
        "appointment": {"id": 1, "patient_id": 1, "appointment_type_id": "type_vip_consultation"},
        "patient": {"id": 1},
    },
}


@pytest.fixture(scope="module")
def resolved(api: Api, pathway_world: PathwayWorld) -> httpx.Response:
    return api("POST", "/v1/pathway-rules/resolve", role="specialist", json=VIP_BOOKING)


class TestResolve:
    def test_data_and_meta(self, resolved: httpx.Response) -> None:
        r = resolved
        assert r.status_code == 200 and set(body(r) or {}) == {"data", "meta"}, describe(r)

    def test_shape(self, resolved: httpx.Response) -> None:
        res = data(resolved)
        assert set(res) >= {"trigger_type", "config", "matched_rule_id", "evaluations"} and set(
            res.get("config", {})
        ) == set(CONFIG_FIELDS), res

    def test_first_match_wins(self, resolved: httpx.Response, pathway_world: PathwayWorld) -> None:
        res = data(resolved)
        assert (
            res.get("matched_rule_id") == pathway_world.rule_id
            and res.get("config", {}).get("suggested_priority") == "urgent"
        ), res

    def test_evaluations_in_priority_order(self, resolved: httpx.Response) -> None:
        evs = data(resolved).get("evaluations") or []
        wanted = {"rule_id", "priority", "enabled", "matched", "failed_conditions"}
        assert [x.get("priority") for x in evs] == [0, 2, 10] and all(
            set(x) >= wanted for x in evs
        ), evs

    def test_failed_conditions_named(self, api: Api, pathway_world: PathwayWorld) -> None:
        r = api(
            "POST",
            "/v1/pathway-rules/resolve",
            json={
                "trigger_type": "appointment.booked",
                "data": {"appointment": {"id": 1, "patient_id": 1, "appointment_type_id": "other"}},
            },
        )
        ev0 = (data(r).get("evaluations") or [{}])[0]
        assert ev0.get("failed_conditions") == ["appointment_type_ids"], ev0

    def test_non_json_400(self, api: Api) -> None:
        r = api("POST", "/v1/pathway-rules/resolve", content=b"x", **NOT_JSON)
        assert pathway_error(r, 400, "VALIDATION_ERROR"), describe(r)


@pytest.fixture(scope="module")
def deleted(api: Api) -> tuple[Any, httpx.Response]:
    """A scratch organisation's rule and the answer to its DELETE."""
    rule = {"trigger_type": "appointment.booked", "rule_name": "E", "priority": 2}
    rule_id = data(api("POST", "/v1/pathway-rules", org=SCRATCH, json=rule)).get("id")
    return rule_id, api("DELETE", f"/v1/pathway-rules/{rule_id}", org=SCRATCH)


class TestDelete:
    def test_delete_200_null_data_and_request_id(self, deleted: tuple[Any, httpx.Response]) -> None:
        _, r = deleted
        b = body(r) or {}
        assert r.status_code == 200 and b.get("data", "x") is None and has_request_id_meta(r), (
            describe(r)
        )

    def test_delete_again_404(self, api: Api, deleted: tuple[Any, httpx.Response]) -> None:
        rule_id, _ = deleted
        r = api("DELETE", f"/v1/pathway-rules/{rule_id}", org=SCRATCH)
        assert pathway_error(r, 404, "NOT_FOUND"), describe(r)
