"""``/v1/patients/{patient_id}/preferences``: what applies on each channel and why; an admin
sets careflow's own opt-outs, each change an audit entry with ids only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from careflow.kit.clock import FrozenClock
from tests.fixtures.factories import PATIENT, onboarded, post_event

Auth = Callable[..., dict[str, str]]
URL = f"/v1/patients/{PATIENT['id']}/preferences"


async def get(client: httpx.AsyncClient, auth: Auth, role: str = "admin") -> dict[str, Any]:
    r = await client.get(URL, headers=auth(role))
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


async def put(client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.put(URL, json=body, headers=auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


async def audit(client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
    r = await client.get(
        "/v1/audit-log", params={"object_type": "patient_preferences"}, headers=auth()
    )
    return r.json()["data"]  # type: ignore[no-any-return]


class TestPreferences:
    async def test_the_host_flags_until_careflow_records_its_own(
        self, client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
    ) -> None:
        await post_event(
            client, auth, "patient.onboarded", onboarded({**PATIENT, "email_opt_out": True})
        )
        data = await get(client, auth, "specialist")
        assert data == {
            "patient_id": 100,
            "email": {"opted_out": True, "source": "host", "updated_at": "2025-02-15T10:00:00Z"},
            "sms": {"opted_out": False, "source": "host", "updated_at": "2025-02-15T10:00:00Z"},
        }

        clock.advance(timedelta(minutes=1))
        data = await put(client, auth, {"sms": {"opted_out": True}})
        assert data["sms"] == {
            "opted_out": True,
            "source": "admin",
            "updated_at": "2025-02-15T10:01:00Z",
        }
        assert data["email"]["source"] == "host"  # left out: unchanged

        # A later snapshot without the flag does not undo careflow's record.
        await post_event(client, auth, "patient.updated", {"patient": {"id": 100}})
        assert (await get(client, auth))["sms"]["opted_out"] is True

        # Opting back in removes careflow's record; the host's own flag stays the host's.
        data = await put(client, auth, {"sms": {"opted_out": False}, "email": {"opted_out": False}})
        assert data["sms"]["opted_out"] is False
        assert (data["email"]["opted_out"], data["email"]["source"]) == (True, "host")

        entries = await audit(client, auth)
        assert sorted((e["before"]["channel"], e["after"]["opted_out"]) for e in entries) == [
            ("sms", False),
            ("sms", True),
        ]
        for entry in entries:
            assert (entry["object_id"], entry["actor_role"]) == ("100", "admin")
            assert "ada" not in str(entry).lower()

    async def test_setting_what_is_already_set_writes_no_entry(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        await put(client, auth, {"email": {"opted_out": True}})
        data = await put(client, auth, {"email": {"opted_out": True}})
        assert (data["email"]["opted_out"], data["email"]["source"]) == (True, "admin")
        await put(client, auth, {"sms": {"opted_out": False}})
        assert len(await audit(client, auth)) == 1

    async def test_an_admin_opt_out_skips_the_sms(
        self, client: httpx.AsyncClient, auth: Auth, drain: Any
    ) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        await put(client, auth, {"sms": {"opted_out": True}})
        r = await client.post(
            "/v1/automations/rules",
            json={
                "name": "Text",
                "trigger_event": "patient.onboarded",
                "actions": [{"type": "send_sms", "template": "welcome_patient"}],
            },
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        r = await client.get("/v1/automations/executions", headers=auth())
        [execution] = r.json()["data"]
        r = await client.get(f"/v1/automations/executions/{execution['id']}", headers=auth())
        [action] = r.json()["data"]["actions_executed"]
        assert (action["status"], action["reason"]) == (
            "skipped",
            "patient opted out of SMS in careflow",
        )

    async def test_a_patient_the_host_has_not_sent_has_careflows_records_alone(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        # Another organisation's patient of the same id is not this one.
        await post_event(
            client, auth, "patient.onboarded", onboarded({**PATIENT, "sms_opt_out": True}), org=2
        )
        nothing = {"opted_out": False, "source": "host", "updated_at": None}
        assert await get(client, auth) == {"patient_id": 100, "email": nothing, "sms": nothing}
        data = await put(client, auth, {"email": {"opted_out": True}})
        assert (data["email"]["opted_out"], data["email"]["source"]) == (True, "admin")
        assert data["sms"] == nothing

    @pytest.mark.parametrize(
        ("role", "get_status", "put_status"),
        [("admin", 200, 200), ("specialist", 200, 403), ("service", 403, 403)],
    )
    async def test_access(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        role: str,
        get_status: int,
        put_status: int,
    ) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        assert (await client.get(URL, headers=auth(role))).status_code == get_status
        r = await client.put(URL, json={"email": {"opted_out": True}}, headers=auth(role))
        assert r.status_code == put_status
        if put_status != 200:
            assert (await get(client, auth))["email"]["opted_out"] is False
            assert await audit(client, auth) == []

    @pytest.mark.parametrize(
        "body",
        [{"sms": {"opted_out": "yes"}}, {"sms": {}}, {"push": {"opted_out": True}}, {"sms": True}],
    )
    async def test_bad_bodies_are_400(
        self, client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]
    ) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        r = await client.put(URL, json=body, headers=auth())
        assert r.status_code == 400, r.text
