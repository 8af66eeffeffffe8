"""Required forms and the patient gate (SPEC §5, §7): the world's blocking forms hold the gate
shut until each is completed.

``pending`` reads the gate and the forms before ``completed`` completes them; ``completed``
asks for ``pending`` first, so the before-and-after order is a fixture dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import (
    TS_Z,
    auto_error,
    body,
    data,
    describe,
    page_meta_ok,
    timestamps_not_z,
)
from tests.conformance.server import Api
from tests.conformance.world import WorkerResults

FORM_KEYS = {
    "id",
    "patient_id",
    "form_template_id",
    "blocking",
    "description",
    "status",
    "execution_id",
    "created_at",
    "completed_at",
}


@dataclass
class Pending:
    gate: httpx.Response
    forms: httpx.Response

    @property
    def form_list(self) -> list[dict[str, Any]]:
        return list((body(self.forms) or {}).get("data") or [])


@pytest.fixture(scope="module")
def pending(api: Api, worker_results: WorkerResults) -> Pending:
    return Pending(
        api("GET", "/v1/patients/100/gate", role="service"),
        api("GET", "/v1/forms", params={"patient_id": 100, "status": "pending"}),
    )


@pytest.fixture(scope="module")
def completed(api: Api, pending: Pending) -> list[tuple[dict[str, Any], httpx.Response]]:
    return [
        (f, api("POST", f"/v1/forms/{f['id']}/complete", role="service")) for f in pending.form_list
    ]


class TestGateWhilePending:
    def test_gate_200_shape(self, pending: Pending) -> None:
        r = pending.gate
        assert r.status_code == 200 and set(data(r)) >= {
            "patient_id",
            "blocked",
            "pending_forms",
        }, describe(r)

    def test_gate_blocked_by_three_forms(self, pending: Pending) -> None:
        g = data(pending.gate)
        templates = sorted(f.get("form_template_id") for f in g.get("pending_forms", []))
        assert g.get("blocked") is True and templates == [42, 43, 50], g

    def test_gate_patient_id_echoed_as_integer(self, pending: Pending) -> None:
        assert data(pending.gate).get("patient_id") == 100

    def test_pending_form_fields(self, pending: Pending) -> None:
        forms = data(pending.gate).get("pending_forms", [])
        assert all(set(f) >= {"id", "form_template_id", "blocking", "created_at"} for f in forms)


class TestForms:
    def test_list_envelope(self, pending: Pending) -> None:
        assert page_meta_ok(body(pending.forms)), describe(pending.forms)

    def test_form_fields(self, pending: Pending) -> None:
        forms = pending.form_list
        assert forms and all(set(f) >= FORM_KEYS for f in forms), forms[:1]

    def test_description_from_action(self, pending: Pending) -> None:
        assert any(
            f.get("description") == "Privacy Policy & GDPR Consent" for f in pending.form_list
        ), pending.form_list

    def test_timestamps_z(self, pending: Pending) -> None:
        assert not timestamps_not_z(body(pending.forms))

    def test_get_form_200_data(self, api: Api, pending: Pending) -> None:
        form_id = pending.form_list[0]["id"] if pending.form_list else 0
        r = api("GET", f"/v1/forms/{form_id}")
        assert r.status_code == 200 and set(body(r) or {}) == {"data"}, describe(r)

    def test_missing_form_404(self, api: Api) -> None:
        r = api("GET", "/v1/forms/999999")
        assert auto_error(r, 404, "form_not_found"), describe(r)


class TestCompletion:
    def test_each_form_completes(
        self, completed: list[tuple[dict[str, Any], httpx.Response]]
    ) -> None:
        assert len(completed) == 3
        for form, r in completed:
            assert (
                r.status_code == 200
                and data(r).get("status") == "completed"
                and TS_Z.match(str(data(r).get("completed_at")))
            ), f"form {form['form_template_id']}: {describe(r)}"

    def test_gate_unblocked_after_completing(
        self, api: Api, completed: list[tuple[dict[str, Any], httpx.Response]]
    ) -> None:
        g = data(api("GET", "/v1/patients/100/gate"))
        assert g.get("blocked") is False and g.get("pending_forms") == [], g

    def test_gate_string_patient_id_echoed(self, api: Api, worker_results: WorkerResults) -> None:
        r = api("GET", "/v1/patients/p-str/gate")
        g = data(r)
        assert (
            r.status_code == 200 and g.get("patient_id") == "p-str" and g.get("blocked") is True
        ), g
