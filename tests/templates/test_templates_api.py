"""/v1/templates: list, read, create or replace, delete; access and tenancy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker

Auth = Callable[..., dict[str, str]]

WELCOME = {
    "subject": "Welcome to {{ patient.first_name }}'s clinic",
    "body": "Hi {{ patient.first_name }}",
}
BUILTIN_COUNT = 10


async def audit_entries(engine: AsyncEngine) -> list[AuditEntry]:
    async with create_sessionmaker(engine)() as session:
        result = await session.execute(select(AuditEntry).order_by(AuditEntry.id))
        return list(result.scalars())


async def put(
    client: httpx.AsyncClient, auth: Auth, path: str, body: dict[str, Any], org: int = 1
) -> httpx.Response:
    return await client.put(f"/v1/templates/{path}", json=body, headers=auth("admin", org=org))


class TestListTemplates:
    async def test_lists_the_builtins_for_both_channels(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/templates", headers=auth("admin"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"] == {"total": BUILTIN_COUNT, "page": 1, "limit": 20}
        keys = {(t["key"], t["channel"]) for t in body["data"]}
        for key in ("welcome_patient", "appointment_reminder", "form_reminder"):
            assert {(key, "email"), (key, "sms")} <= keys
        first = body["data"][0]
        assert set(first) == {
            "key",
            "channel",
            "subject",
            "body",
            "html_body",
            "built_in",
            "created_at",
            "updated_at",
        }
        assert first["built_in"] is True
        assert first["created_at"] is None

    async def test_an_override_replaces_its_builtin_in_the_list(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        assert (await put(client, auth, "email/welcome_patient", WELCOME)).status_code == 201
        assert (
            await put(client, auth, "sms/dental_recall", {"body": "Check-up due"})
        ).status_code == 201

        r = await client.get("/v1/templates", headers=auth())
        data = r.json()["data"]
        assert r.json()["meta"]["total"] == BUILTIN_COUNT + 1
        welcome = [t for t in data if (t["key"], t["channel"]) == ("welcome_patient", "email")]
        assert [t["built_in"] for t in welcome] == [False]
        assert welcome[0]["body"] == WELCOME["body"]
        assert welcome[0]["updated_at"] == "2025-02-15T10:00:00Z"

    async def test_filter_by_channel_and_paging(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/templates", params={"channel": "sms"}, headers=auth())
        assert r.json()["meta"]["total"] == BUILTIN_COUNT // 2
        assert {t["channel"] for t in r.json()["data"]} == {"sms"}

        r = await client.get("/v1/templates", params={"page": 4, "limit": 3}, headers=auth())
        assert r.json()["meta"] == {"total": BUILTIN_COUNT, "page": 4, "limit": 3}
        assert len(r.json()["data"]) == 1

    @pytest.mark.parametrize("params", [{"limit": 101}, {"page": 0}, {"channel": "fax"}])
    async def test_bad_query_is_a_validation_error(
        self, client: httpx.AsyncClient, auth: Auth, params: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/templates", params=params, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"


class TestGetTemplate:
    async def test_a_builtin(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get("/v1/templates/email/form_reminder", headers=auth("admin"))
        assert r.status_code == 200
        data = r.json()["data"]
        assert (data["key"], data["channel"], data["built_in"]) == ("form_reminder", "email", True)
        assert data["subject"]

    async def test_an_unknown_key_is_template_not_found(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/templates/sms/nope", headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "template_not_found"


class TestPutTemplate:
    async def test_create_then_replace_writes_audit_entries(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        r = await put(client, auth, "email/welcome_patient", WELCOME)
        assert r.status_code == 201, r.text
        assert r.json()["data"] == {
            "key": "welcome_patient",
            "channel": "email",
            "subject": WELCOME["subject"],
            "body": WELCOME["body"],
            "html_body": None,
            "built_in": False,
            "created_at": "2025-02-15T10:00:00Z",
            "updated_at": "2025-02-15T10:00:00Z",
        }

        r = await put(client, auth, "email/welcome_patient", {**WELCOME, "body": "Hello!"})
        assert r.status_code == 200
        assert r.json()["data"]["body"] == "Hello!"
        got = await client.get("/v1/templates/email/welcome_patient", headers=auth())
        assert got.json()["data"]["body"] == "Hello!"

        created, updated = await audit_entries(engine)
        assert (created.action, created.object_type, created.organization_id) == (
            "create",
            "template",
            1,
        )
        assert created.after is not None and created.after["key"] == "welcome_patient"
        assert created.before is None
        assert (updated.action, updated.object_id) == ("update", created.object_id)
        assert updated.before == {
            "key": "welcome_patient",
            "channel": "email",
            "body": WELCOME["body"],
        }
        assert updated.after == {"key": "welcome_patient", "channel": "email", "body": "Hello!"}
        assert updated.actor_role == "admin"

    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("email/welcome_patient", {"subject": "Hi", "body": "{% if %}"}, "body"),
            ("email/welcome_patient", {"subject": "{{ x", "body": "fine"}, "subject"),
            ("sms/x", {"body": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}, "body"),
            ("sms/x", {"body": "{{ cycler.__init__.__globals__.os }}"}, "body"),
            ("email/x", {"body": "no subject"}, "subject"),
            ("email/x", {"subject": "  ", "body": "blank subject"}, "subject"),
            ("sms/x", {"subject": "Hi", "body": "sms has none"}, "subject"),
            ("sms/x", {"body": ""}, "body"),
            ("sms/x", {"body": "   "}, "body"),
            ("sms/x", {"body": "ok", "colour": "red"}, "colour"),
            ("sms/x", {"body": "ok", "html_body": "<p>ok</p>"}, "html_body"),
            ("email/x", {"subject": "Hi"}, "body"),
            ("email/x", {"subject": "Hi", "html_body": "  "}, "html_body"),
            ("email/x", {"subject": "Hi", "html_body": "<p>{{ x.__class__ }}</p>"}, "html_body"),
        ],
    )
    async def test_invalid_templates_are_refused(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        path: str,
        body: dict[str, Any],
        field: str,
    ) -> None:
        r = await put(client, auth, path, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert field in [d["field"] for d in error["details"]]
        assert await audit_entries(engine) == []

    async def test_an_email_template_may_give_html_alone_or_with_its_text(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        html = "<p>Hi {{ patient.first_name }}</p>"
        r = await put(client, auth, "email/welcome_patient", {"subject": "Hi", "html_body": html})
        assert r.status_code == 201, r.text
        assert (r.json()["data"]["body"], r.json()["data"]["html_body"]) == ("", html)

        both = {"subject": "Hi", "body": "Hi {{ patient.first_name }}", "html_body": html}
        r = await put(client, auth, "email/welcome_patient", both)
        assert r.status_code == 200, r.text
        got = await client.get("/v1/templates/email/welcome_patient", headers=auth())
        assert {k: got.json()["data"][k] for k in ("body", "html_body")} == {
            "body": both["body"],
            "html_body": html,
        }
        created, updated = await audit_entries(engine)
        assert created.after is not None and created.after["html_body"] == html
        assert updated.after == {"key": "welcome_patient", "channel": "email", "body": both["body"]}

    async def test_builtin_emails_have_html_variants(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get("/v1/templates?channel=email", headers=auth())
        assert r.status_code == 200, r.text
        for template in r.json()["data"]:
            assert template["html_body"].startswith("<!DOCTYPE html>"), template["key"]
        sms = await client.get("/v1/templates/sms/welcome_patient", headers=auth())
        assert sms.json()["data"]["html_body"] is None

    @pytest.mark.parametrize("path", ["fax/welcome_patient", "sms/bad%20key", "sms/-x"])
    async def test_bad_channel_or_key_is_a_validation_error(
        self, client: httpx.AsyncClient, auth: Auth, path: str
    ) -> None:
        r = await put(client, auth, path, {"body": "ok"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    async def test_a_body_that_is_not_json_is_a_validation_error(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.put(
            "/v1/templates/sms/x",
            content=b"{nope",
            headers={**auth(), "content-type": "application/json"},
        )
        assert r.status_code == 400


class TestDeleteTemplate:
    async def test_delete_restores_the_builtin(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await put(client, auth, "sms/form_reminder", {"body": "Our own reminder"})

        r = await client.delete("/v1/templates/sms/form_reminder", headers=auth())
        assert r.status_code == 204
        assert r.content == b""
        got = await client.get("/v1/templates/sms/form_reminder", headers=auth())
        assert got.json()["data"]["built_in"] is True

        again = await client.delete("/v1/templates/sms/form_reminder", headers=auth())
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "template_not_found"

        entries = await audit_entries(engine)
        assert [e.action for e in entries] == ["create", "delete"]
        assert entries[1].before is not None and entries[1].before["body"] == "Our own reminder"
        assert entries[1].after is None

    async def test_a_builtin_cannot_be_deleted(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.delete("/v1/templates/email/welcome_patient", headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "template_not_found"


class TestAccess:
    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_other_roles_cannot_read(
        self, client: httpx.AsyncClient, auth: Auth, role: str
    ) -> None:
        for path in ("/v1/templates", "/v1/templates/email/welcome_patient"):
            r = await client.get(path, headers=auth(role))
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "forbidden"

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_only_admins_write(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, role: str
    ) -> None:
        r = await client.put("/v1/templates/sms/x", json={"body": "hi"}, headers=auth(role))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        r = await client.delete("/v1/templates/sms/x", headers=auth(role))
        assert r.status_code == 403
        assert await audit_entries(engine) == []

    async def test_no_token_is_401(self, client: httpx.AsyncClient) -> None:
        for method, path in (
            ("GET", "/v1/templates"),
            ("GET", "/v1/templates/sms/welcome_patient"),
            ("PUT", "/v1/templates/sms/welcome_patient"),
            ("DELETE", "/v1/templates/sms/welcome_patient"),
        ):
            r = await client.request(method, path, json={"body": "x"} if method == "PUT" else None)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"


class TestTenancy:
    async def test_another_org_never_sees_an_override(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await put(client, auth, "email/welcome_patient", WELCOME, org=1)
        await put(client, auth, "sms/dental_recall", {"body": "Check-up due"}, org=1)

        r = await client.get("/v1/templates/email/welcome_patient", headers=auth(org=2))
        assert r.json()["data"]["built_in"] is True
        r = await client.get("/v1/templates/sms/dental_recall", headers=auth(org=2))
        assert r.status_code == 404
        listed = await client.get("/v1/templates", headers=auth(org=2))
        assert listed.json()["meta"]["total"] == BUILTIN_COUNT
        assert all(t["built_in"] for t in listed.json()["data"])

        r = await client.delete("/v1/templates/sms/dental_recall", headers=auth(org=2))
        assert r.status_code == 404
        still = await client.get("/v1/templates/sms/dental_recall", headers=auth(org=1))
        assert still.status_code == 200

    async def test_each_org_keeps_its_own_override(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        assert (
            await put(client, auth, "sms/welcome_patient", {"body": "one"}, org=1)
        ).status_code == 201
        assert (
            await put(client, auth, "sms/welcome_patient", {"body": "two"}, org=2)
        ).status_code == 201
        one = await client.get("/v1/templates/sms/welcome_patient", headers=auth(org=1))
        two = await client.get("/v1/templates/sms/welcome_patient", headers=auth(org=2))
        assert (one.json()["data"]["body"], two.json()["data"]["body"]) == ("one", "two")
