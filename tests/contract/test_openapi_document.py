"""The OpenAPI document is a contract a client can be generated from, and what it states about
bounds and types the API enforces; ``/docs`` and ``/redoc`` load nothing from another host."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careflow.automations.catalog import ACTIONS, MAX_ACTIONS, MAX_DELAY_MINUTES, TRIGGERS
from careflow.events.catalog import EVENT_TYPES
from careflow.examples import FIRST_VIDEO, PATIENT, without_delays
from careflow.kit.openapi import OPERATION_IDS

Auth = Callable[..., dict[str, str]]
OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}
# Called by a provider or a patient's mail client, authenticated otherwise (a signature, a
# signed link): declared with an empty security requirement.
SIGNED_PATHS = {
    "/v1/providers/twilio/status",
    "/v1/providers/twilio/inbound",
    "/v1/unsubscribe/{token}",
}


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


class TestOperations:
    def test_every_operation_has_its_stable_readable_id_and_one_tag(
        self, document: dict[str, Any]
    ) -> None:
        seen = {}
        unlisted = [(m, p) for m, p, _ in _operations(document) if (m, p) not in OPERATION_IDS]
        assert not unlisted, "give each a stable id in kit.openapi.OPERATION_IDS"
        for method, path, operation in _operations(document):
            assert operation["operationId"] == OPERATION_IDS[(method, path)]
            assert re.fullmatch(r"[a-z]+[A-Za-z]*", operation["operationId"])
            assert len(operation["tags"]) == 1, (method, path)
            seen[operation["operationId"]] = (method, path)
        assert len(seen) == len(_operations(document))
        assert seen["ingestEvent"] == ("post", "/v1/events")
        assert seen["createPathwayRule"] == ("post", "/v1/pathway-rules")
        assert seen["listAutomationRules"] == ("get", "/v1/automations/rules")

    def test_bearer_security_on_every_operation_that_needs_a_token(
        self, document: dict[str, Any]
    ) -> None:
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        assert scheme == scheme | {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        for method, path, operation in _operations(document):
            if path in OPEN_PATHS:
                assert "security" not in operation, path
            elif path in SIGNED_PATHS:
                assert operation["security"] == [], (method, path)
            else:
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert {"401", "403", "503"} <= set(operation["responses"])

    def test_idempotency_key_where_accepted(self, document: dict[str, Any]) -> None:
        for path in ("/v1/events", "/v1/automations/rules", "/v1/pathway-rules"):
            operation = document["paths"][path]["post"]
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            assert names == ["Idempotency-Key"], path
            assert {"409", "422"} <= set(operation["responses"]), path
        ingest = document["paths"]["/v1/events"]["post"]["responses"]
        replay = ingest["200"]["content"]["application/json"]["schema"]
        assert replay == ingest["202"]["content"]["application/json"]["schema"]

    def test_errors_in_their_family_envelope(self, document: dict[str, Any]) -> None:
        for _method, path, operation in _operations(document):
            for code, answer in operation["responses"].items():
                if int(code) < 400 or path in OPEN_PATHS:
                    continue
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                family = "PathwayErrorEnvelope" if "/pathway-" in path else "ErrorEnvelope"
                assert ref.endswith("/" + family), (path, code)

    def test_conflicts_documented(self, document: dict[str, Any]) -> None:
        paths = document["paths"]
        for path, method in [
            ("/v1/pathway-rules", "post"),
            ("/v1/pathway-rules/{rule_id}", "patch"),
            ("/v1/pathway-configs/{trigger_type}", "put"),
            ("/v1/forms/{form_id}/complete", "post"),
            ("/v1/automations/executions/{id}/retry", "post"),
        ]:
            assert "409" in paths[path][method]["responses"], (method, path)

    def test_operations_endpoints(self, document: dict[str, Any]) -> None:
        metrics = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
        assert "503" in document["paths"]["/readyz"]["get"]["responses"]


class TestSchemas:
    def test_names_are_unique_and_carry_no_module_path(self, document: dict[str, Any]) -> None:
        names = set(document["components"]["schemas"])
        assert not [n for n in names if "__" in n or not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)]
        assert {"AutomationRule", "PathwayRule", "AutomationTrigger", "PathwayTrigger"} <= names

    def test_enums_for_closed_sets(self, document: dict[str, Any]) -> None:
        schemas = document["components"]["schemas"]
        assert schemas["TriggerEvent"]["enum"] == [t["event"] for t in TRIGGERS]
        assert schemas["EventType"]["enum"] == list(EVENT_TYPES)
        assert schemas["ActionType"]["enum"] == [a["type"] for a in ACTIONS]
        for name in ("EntityType", "ExecutionStatus", "ActorRole", "Priority", "CreationMode"):
            assert schemas[name]["enum"], name
        rule = schemas["AutomationRule"]["properties"]
        assert rule["trigger_event"]["$ref"] == "#/components/schemas/TriggerEvent"

    def test_actions_are_a_union_discriminated_on_type_from_the_catalog(
        self, document: dict[str, Any]
    ) -> None:
        schemas = document["components"]["schemas"]
        action = schemas["Action"]
        assert action["discriminator"]["propertyName"] == "type"
        assert set(action["discriminator"]["mapping"]) == {a["type"] for a in ACTIONS}
        email = schemas["SendEmailAction"]
        assert email["required"] == ["type", "template"]
        assert email["properties"]["delay_minutes"]["maximum"] == MAX_DELAY_MINUTES
        form = schemas["RequireFormAction"]
        assert form["required"] == ["type", "form_template_id", "blocking"]
        segment = schemas["UpdateSegmentAction"]["properties"]["action"]
        assert segment["enum"] == ["add", "remove"]
        plain = schemas["AutomationRuleCreatePlain"]["properties"]["actions"]
        assert plain["maxItems"] == MAX_ACTIONS

    def test_conditions_are_recursive(self, document: dict[str, Any]) -> None:
        condition = document["components"]["schemas"]["Condition"]
        ref = "#/components/schemas/Condition"
        assert condition["properties"]["all"]["items"]["$ref"] == ref
        assert condition["properties"]["not"]["$ref"] == ref
        operators = document["components"]["schemas"]["ConditionOperators"]["properties"]
        assert set(operators) >= {"eq", "in", "not_in", "gte", "exists", "starts_with"}

    def test_event_bodies_discriminated_on_type_name_what_careflow_reads(
        self, document: dict[str, Any]
    ) -> None:
        schemas = document["components"]["schemas"]
        body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"]["$ref"].endswith("/EventCreate")
        assert set(schemas["EventCreate"]["discriminator"]["mapping"]) == set(EVENT_TYPES)
        booked = schemas["AppointmentBookedEvent"]["properties"]["data"]
        assert booked["required"] == ["appointment"]
        assert booked["properties"]["appointment"]["required"] == ["id", "patient_id"]
        patient = schemas["Patient"]
        assert patient["additionalProperties"] is True
        assert {"email", "phone", "timezone", "first_name", "email_opt_out", "sms_opt_out"} <= set(
            patient["properties"]
        )
        appointment = schemas["Appointment"]["properties"]
        assert {
            "id",
            "patient_id",
            "type",
            "appointment_type_id",
            "starts_at",
            "ends_at",
            "status",
        } <= set(appointment)

    def test_examples_on_requests(self, document: dict[str, Any]) -> None:
        schemas = document["components"]["schemas"]
        assert schemas["AutomationRuleCreate"]["examples"][0]["name"] == FIRST_VIDEO["name"]
        assert schemas["AppointmentBookedEvent"]["examples"][0]["type"] == "appointment.booked"


class TestBoundsAreEnforced:
    async def test_more_than_twenty_actions(self, client: httpx.AsyncClient, auth: Auth) -> None:
        body = without_delays(FIRST_VIDEO)
        body["actions"] = [{"type": "send_email", "template": "welcome_patient"}] * (
            MAX_ACTIONS + 1
        )
        answer = await client.post("/v1/automations/rules", json=body, headers=auth("admin"))
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "validation_error"
        assert answer.json()["error"]["details"] == [
            {"field": "actions", "message": f"at most {MAX_ACTIONS} actions"}
        ]
        body["actions"] = body["actions"][:MAX_ACTIONS]
        ok = await client.post("/v1/automations/rules", json=body, headers=auth("admin"))
        assert ok.status_code == 201, ok.text

    @pytest.mark.parametrize("method", ["post", "put"])
    async def test_delay_over_thirty_days(
        self, client: httpx.AsyncClient, auth: Auth, method: str
    ) -> None:
        body = without_delays(FIRST_VIDEO)
        created = await client.post("/v1/automations/rules", json=body, headers=auth("admin"))
        body["actions"][1]["delay_minutes"] = MAX_DELAY_MINUTES + 1
        if method == "post":
            answer = await client.post("/v1/automations/rules", json=body, headers=auth("admin"))
        else:
            answer = await client.put(
                f"/v1/automations/rules/{created.json()['data']['id']}",
                json={"actions": body["actions"]},
                headers=auth("admin"),
            )
        assert answer.status_code == 400
        assert answer.json()["error"]["details"] == [
            {"field": "actions[1].delay_minutes", "message": f"must be at most {MAX_DELAY_MINUTES}"}
        ]

    @pytest.mark.parametrize(
        ("field", "value"),
        [("email", 12345), ("phone", 447700900123), ("sms_opt_out", "yes")],
    )
    async def test_patient_fields_careflow_reads_are_typed(
        self, client: httpx.AsyncClient, auth: Auth, field: str, value: Any
    ) -> None:
        event = {"type": "patient.onboarded", "data": {"patient": {**PATIENT, field: value}}}
        answer = await client.post("/v1/events", json=event, headers=auth("service"))
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [f"data.patient.{field}"]


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient, auth: Auth) -> None:
    answer = await client.request("OPTIONS", "/v1/automations/rules", headers=auth("admin"))
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}
    answer = await client.patch("/v1/automations/rules/1", headers=auth("admin"))
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "PUT", "DELETE"}


class TestDocsPages:
    @pytest.mark.parametrize("page", ["/docs", "/redoc"])
    async def test_pages_load_nothing_from_another_host(
        self, client: httpx.AsyncClient, page: str
    ) -> None:
        answer = await client.get(page)
        assert answer.status_code == 200
        html = answer.text
        assert not re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+", html), html
        assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(
            r"url: '([^']+)'|spec-url=\"([^\"]+)\"", html
        )
        local = [a for group in assets for a in ([group] if isinstance(group, str) else group) if a]
        assert local
        for asset in local:
            assert asset.startswith("/"), asset
            if asset.startswith("/docs/static/"):
                got = await client.get(asset)
                assert got.status_code == 200, asset
                assert got.content

    async def test_swagger_offers_authorize_and_keeps_the_token(
        self, client: httpx.AsyncClient
    ) -> None:
        html = (await client.get("/docs")).text
        assert '"persistAuthorization": true' in html
        assert '"validatorUrl": null' in html
        assert "/docs/static/swagger-ui/swagger-ui-bundle.js" in html
        assert "/openapi.json" in html
