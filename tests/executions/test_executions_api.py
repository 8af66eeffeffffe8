"""GET /v1/automations/executions[/{id}] and POST …/{id}/retry."""

from __future__ import annotations

import pytest

from careflow.forms.models import Form
from tests.fixtures.database import count
from tests.fixtures.factories import (
    EXECUTIONS,
    GDPR_WELCOME,
    PATIENT,
    create_rule,
    executions,
    onboarded,
    post_event,
    rule_body,
)


async def _onboard(client, auth, patient_id: int, org: int = 1) -> None:
    await post_event(
        client, auth, "patient.onboarded", onboarded({**PATIENT, "id": patient_id}), org=org
    )


class TestList:
    async def test_filters_sort_and_paging(self, client, auth, drain, clock) -> None:
        welcome = await create_rule(client, auth, GDPR_WELCOME)
        vip = await create_rule(
            client, auth, rule_body(GDPR_WELCOME, name="VIP", conditions={"patient.tags": "vip"})
        )
        await _onboard(client, auth, 1)
        await drain()
        clock.advance(days=1)
        await _onboard(client, auth, 2)
        await drain()
        clock.advance(days=1)
        await _onboard(client, auth, 3)
        await drain()

        rows = await executions(client, auth)
        assert len(rows) == 6
        # Newest first, by executed_at then id.
        stamps = [(r["executed_at"], r["id"]) for r in rows]
        assert stamps == sorted(stamps, reverse=True)
        assert [r["trigger_entity_id"] for r in rows[::2]] == [3, 2, 1]

        assert {
            r["automation_rule_id"]
            for r in await executions(client, auth, automation_rule_id=vip["id"])
        } == {vip["id"]}
        assert len(await executions(client, auth, status="skipped")) == 3
        assert {
            r["automation_rule_id"] for r in await executions(client, auth, status="success")
        } == {welcome["id"]}
        assert len(await executions(client, auth, trigger_event="patient.onboarded")) == 6
        assert await executions(client, auth, trigger_event="appointment.booked") == []

        # A date bound covers the whole day (UTC); date-times are inclusive instants.
        assert len(await executions(client, auth, from_date="2025-02-16")) == 4
        assert len(await executions(client, auth, to_date="2025-02-16")) == 4
        assert (
            len(await executions(client, auth, from_date="2025-02-16", to_date="2025-02-16")) == 2
        )
        assert len(await executions(client, auth, to_date="2025-02-16T10:00:00Z")) == 4
        assert len(await executions(client, auth, to_date="2025-02-16T09:59:59Z")) == 2
        assert len(await executions(client, auth, from_date="2025-02-17T10:00:00+00:00")) == 2

        page = await client.get(EXECUTIONS, params={"page": 2, "limit": 4}, headers=auth())
        assert page.status_code == 200
        assert page.json()["meta"] == {"total": 6, "page": 2, "limit": 4}
        assert [r["id"] for r in page.json()["data"]] == [r["id"] for r in rows[4:]]

    @pytest.mark.parametrize(
        "params",
        [
            {"status": "done"},
            {"from_date": "yesterday"},
            {"to_date": "2025-13-01"},
            {"from_date": "2025-02-03", "to_date": "2025-02-01"},
            {"limit": 101},
            {"limit": 0},
            {"page": 0},
            {"automation_rule_id": "x"},
        ],
    )
    async def test_bad_parameters(self, client, auth, params) -> None:
        response = await client.get(EXECUTIONS, params=params, headers=auth())
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

    async def test_default_paging(self, client, auth) -> None:
        response = await client.get(EXECUTIONS, headers=auth("specialist"))
        assert response.status_code == 200
        assert response.json() == {"data": [], "meta": {"total": 0, "page": 1, "limit": 20}}

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_roles(self, client, auth, role) -> None:
        assert (await client.get(EXECUTIONS, headers=auth(role))).status_code == 403
        assert (await client.get(f"{EXECUTIONS}/1", headers=auth(role))).status_code == 403

    async def test_tenancy(self, client, auth, drain) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await _onboard(client, auth, 1)
        await drain()
        [mine] = await executions(client, auth)
        other = await client.get(EXECUTIONS, headers=auth("admin", org=2))
        assert other.json()["data"] == []
        response = await client.get(f"{EXECUTIONS}/{mine['id']}", headers=auth("admin", org=2))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "execution_not_found"
        response = await client.post(
            f"{EXECUTIONS}/{mine['id']}/retry", headers=auth("admin", org=2)
        )
        assert response.status_code == 404


class TestGet:
    async def test_seed_shape(self, client, auth, drain) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await _onboard(client, auth, 100)
        await drain()
        [row] = await executions(client, auth)
        response = await client.get(f"{EXECUTIONS}/{row['id']}", headers=auth("specialist"))
        assert response.status_code == 200
        data = response.json()["data"]
        for key in (
            "id",
            "organization_id",
            "automation_rule_id",
            "automation_rule_name",
            "trigger_event",
            "trigger_entity_type",
            "trigger_entity_id",
            "status",
            "error_message",
            "executed_at",
        ):
            assert data[key] == row[key]
        form, _, email = data["actions_executed"]
        assert form["action"] == form["type"] == "require_form"
        assert form["form_template_id"] == 42
        assert form["status"] == "success"
        assert isinstance(form["form_id"], int)
        assert isinstance(form["duration_ms"], int)
        assert email["action"] == email["type"] == "send_email"
        assert email["template"] == "welcome_patient"
        assert email["email_id"] == row["actions_executed"][2]["email_id"]
        # The list view carries no config or timings.
        assert "duration_ms" not in row["actions_executed"][0]
        assert "form_template_id" not in row["actions_executed"][0]

    async def test_update_segment_action_field_does_not_clash(self, client, auth, drain) -> None:
        await create_rule(
            client,
            auth,
            rule_body(
                GDPR_WELCOME,
                actions=[{"type": "update_segment", "segment_id": 4, "action": "add"}],
            ),
        )
        await _onboard(client, auth, 100)
        await drain()
        [row] = await executions(client, auth)
        data = (await client.get(f"{EXECUTIONS}/{row['id']}", headers=auth())).json()["data"]
        [step] = data["actions_executed"]
        assert step["action"] == "update_segment"
        assert step["segment_action"] == "add"
        assert step["segment_id"] == 4

    async def test_not_found(self, client, auth) -> None:
        response = await client.get(f"{EXECUTIONS}/999", headers=auth())
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "execution_not_found"


class TestRetry:
    async def test_reruns_only_failed_actions(self, client, auth, drain, smtp, engine) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        smtp.sink.fail_next = 10
        await _onboard(client, auth, 100)
        await drain(until_settled=True)
        [failed] = await executions(client, auth)
        assert failed["status"] == "partial_failure"
        forms_before = [a["form_id"] for a in failed["actions_executed"][:2]]

        smtp.sink.fail_next = 0
        response = await client.post(f"{EXECUTIONS}/{failed['id']}/retry", headers=auth())
        assert response.status_code == 202, response.text
        data = response.json()["data"]
        assert data["status"] == "running"
        assert data["error_message"] is None
        assert [a["status"] for a in data["actions_executed"]] == ["success", "success"]

        await drain()
        [done] = await executions(client, auth)
        assert done["id"] == failed["id"]
        assert done["status"] == "success"
        assert done["error_message"] is None
        assert [a["form_id"] for a in done["actions_executed"][:2]] == forms_before
        assert done["actions_executed"][2]["status"] == "success"
        assert len(smtp.sink.messages) == 1
        assert await count(engine, Form) == 2
        # The failed attempt's message row is the one the retry sent: updated, not doubled.
        listed = await client.get(
            "/v1/messages", params={"execution_id": done["id"]}, headers=auth()
        )
        [message] = listed.json()["data"]
        assert message["id"] == done["actions_executed"][2]["email_id"]
        assert message["status"] == "sent"
        # A retry is the same execution: the rule's count does not move.
        got = (
            await client.get(f"/v1/automations/rules/{done['automation_rule_id']}", headers=auth())
        ).json()["data"]
        assert got["execution_count"] == 1

    async def test_retry_that_fails_again(self, client, auth, drain, smtp) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        smtp.sink.fail_next = 100
        await _onboard(client, auth, 100)
        await drain(until_settled=True)
        [failed] = await executions(client, auth)
        response = await client.post(f"{EXECUTIONS}/{failed['id']}/retry", headers=auth())
        assert response.status_code == 202
        await drain(until_settled=True)
        [again] = await executions(client, auth)
        assert again["status"] == "partial_failure"
        assert again["error_message"].startswith("send_email failed")
        # …and may be retried once more.
        smtp.sink.fail_next = 0
        assert (
            await client.post(f"{EXECUTIONS}/{failed['id']}/retry", headers=auth())
        ).status_code == 202
        await drain()
        assert (await executions(client, auth))[0]["status"] == "success"

    async def test_not_retryable(self, client, auth, drain, clock) -> None:
        body = rule_body(GDPR_WELCOME)
        body["actions"][2]["delay_minutes"] = 5
        await create_rule(client, auth, body)
        await create_rule(client, auth, rule_body(GDPR_WELCOME, conditions={"patient.tags": "vip"}))
        await _onboard(client, auth, 100)
        await drain()
        rows = {r["status"]: r for r in await executions(client, auth)}
        assert set(rows) == {"running", "skipped"}
        for status in ("running", "skipped"):
            response = await client.post(f"{EXECUTIONS}/{rows[status]['id']}/retry", headers=auth())
            assert response.status_code == 409
            assert response.json()["error"]["code"] == "execution_not_retryable"
        clock.advance(minutes=5)
        await drain()
        response = await client.post(f"{EXECUTIONS}/{rows['running']['id']}/retry", headers=auth())
        assert response.status_code == 409  # success: nothing failed

    async def test_admin_only_and_not_found(self, client, auth) -> None:
        response = await client.post(f"{EXECUTIONS}/1/retry", headers=auth("specialist"))
        assert response.status_code == 403
        response = await client.post(f"{EXECUTIONS}/1/retry", headers=auth())
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "execution_not_found"
