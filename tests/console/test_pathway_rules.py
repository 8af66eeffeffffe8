"""``/console/pathway-rules`` over HTTP: the rules per trigger type in evaluation order,
create / edit / delete through the form, errors beside their fields, the resolve explainer,
and what a specialist may not do."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from tests.console.signin import sign_in
from tests.fixtures.factories import PATHWAY_RULES, create_pathway_rule

Auth = Callable[..., dict[str, str]]


def _form(csrf: str, **fields: str) -> dict[str, str]:
    base = {
        "csrf_token": csrf,
        "trigger_type": "appointment.booked",
        "rule_name": "Video bookings",
        "priority": "3",
        "enabled": "true",
        "conditions": '{"appointment_types": ["video"]}',
        "creation_mode": "",
        "inbox_visibility": "",
        "journey_type": "",
        "suggested_assignment": "video_team",
        "suggested_priority": "high",
        "expected_next_actor": "",
    }
    base.update(fields)
    return base


async def _rules(client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
    answer = await client.get(PATHWAY_RULES, headers=auth())
    return answer.json()["data"]  # type: ignore[no-any-return]


async def _audit_actions(client: httpx.AsyncClient, auth: Auth) -> list[str]:
    answer = await client.get(
        "/v1/audit-log", params={"object_type": "pathway_rule"}, headers=auth()
    )
    return sorted(e["action"] for e in answer.json()["data"])


class TestList:
    async def test_rules_per_trigger_type_in_evaluation_order(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_pathway_rule(client, auth, rule_name="Late", priority=9)
        await create_pathway_rule(client, auth, rule_name="Early", priority=1)
        await create_pathway_rule(
            client,
            auth,
            trigger_type="invoice.overdue",
            rule_name="Big invoices",
            conditions={"invoice_types": ["large"]},
            enabled=False,
        )
        await sign_in(client, token)
        page = await client.get("/console/pathway-rules")
        html = page.text
        assert page.status_code == 200
        booked = html.index('<span class="mono">appointment.booked</span>')
        overdue = html.index('<span class="mono">invoice.overdue</span>')
        assert booked < html.index(">Early<") < html.index(">Late<") < overdue
        assert html.index(">Big invoices<") > overdue
        assert 'href="/console/pathway-rules/new"' in html

        only = await client.get(
            "/console/pathway-rules", params={"trigger_type": "invoice.overdue"}
        )
        assert ">Big invoices<" in only.text and ">Early<" not in only.text
        enabled = await client.get("/console/pathway-rules", params={"enabled": "true"})
        assert ">Big invoices<" not in enabled.text and ">Early<" in enabled.text


class TestWrites:
    async def test_create_edit_delete(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        csrf = await sign_in(client, token)
        created = await client.post("/console/pathway-rules/new", data=_form(csrf))
        assert created.status_code == 303, created.text
        rule_id = created.headers["location"].split("/")[-1].split("?")[0]
        [rule] = await _rules(client, auth)
        assert rule["id"] == rule_id
        assert rule["conditions"] == {"appointment_types": ["video"]}
        assert rule["suggested_priority"] == "high"
        assert rule["creation_mode"] is None  # blank: the base config's

        page = await client.get(created.headers["location"])
        assert "Saved." in page.text
        assert 'name="suggested_assignment" value="video_team"' in page.text

        edited = await client.post(
            f"/console/pathway-rules/{rule_id}",
            data=_form(
                csrf,
                rule_name="Video bookings, urgent",
                priority="4",
                conditions="",
                suggested_priority="urgent",
                suggested_assignment="",
                enabled="",
                trigger_type="invoice.paid",  # ignored: it cannot change
            ),
        )
        assert edited.status_code == 303, edited.text
        [rule] = await _rules(client, auth)
        assert rule["rule_name"] == "Video bookings, urgent"
        assert rule["trigger_type"] == "appointment.booked"
        assert rule["priority"] == 4 and rule["enabled"] is False
        assert rule["conditions"] is None and rule["suggested_assignment"] is None
        assert rule["suggested_priority"] == "urgent"

        deleted = await client.post(
            f"/console/pathway-rules/{rule_id}/delete", data={"csrf_token": csrf}
        )
        assert deleted.status_code == 303
        assert await _rules(client, auth) == []
        assert await _audit_actions(client, auth) == ["create", "delete", "update"]

    async def test_errors_are_shown_beside_their_fields(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_pathway_rule(client, auth, priority=3)
        csrf = await sign_in(client, token)
        taken = await client.post("/console/pathway-rules/new", data=_form(csrf))
        assert taken.status_code == 400
        assert 'id="priority-error" role="alert">must be unique per trigger type' in taken.text
        typo = await client.post(
            "/console/pathway-rules/new",
            data=_form(csrf, priority="5", conditions='{"invoice_types": ["x"]}'),
        )
        assert typo.status_code == 400
        assert (
            'id="conditions-error" role="alert">conditions.invoice_types: &#39;invoice_types&#39;'
            in (typo.text)
        )
        bad = await client.post(
            "/console/pathway-rules/new",
            data=_form(csrf, priority="-1", journey_type="Not A Journey", conditions="{"),
        )
        assert bad.status_code == 400
        assert 'id="conditions-error" role="alert">not valid JSON' in bad.text
        assert len(await _rules(client, auth)) == 1

    async def test_a_refused_edit_changes_nothing(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_pathway_rule(client, auth, priority=1, rule_name="First")
        second = await create_pathway_rule(client, auth, priority=2, rule_name="Second")
        csrf = await sign_in(client, token)
        answer = await client.post(
            f"/console/pathway-rules/{second['id']}",
            data=_form(csrf, rule_name="Renamed", priority="1"),
        )
        assert answer.status_code == 400
        assert 'id="priority-error"' in answer.text
        assert 'value="Renamed"' in answer.text  # what was typed is kept
        names = sorted(r["rule_name"] for r in await _rules(client, auth))
        assert names == ["First", "Second"]
        assert await _audit_actions(client, auth) == ["create", "create"]


class TestExplainer:
    async def test_says_which_rule_matched_and_why_the_others_did_not(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_pathway_rule(client, auth, rule_name="VIP", priority=0)
        await create_pathway_rule(
            client,
            auth,
            rule_name="Video",
            priority=1,
            conditions={"appointment_types": ["video"]},
            suggested_priority="high",
            suggested_assignment=None,
        )
        await create_pathway_rule(client, auth, rule_name="Everything", priority=2, conditions=None)
        await create_pathway_rule(client, auth, rule_name="Off", priority=3, enabled=False)
        csrf = await sign_in(client, token)
        form = await client.get("/console/pathway-rules/resolve")
        assert form.status_code == 200
        assert "type_vip_consultation" in form.text  # a sample payload to start from
        payload = {"appointment": {"id": "apt_1", "type": "video", "appointment_type_id": "t_1"}}
        answer = await client.post(
            "/console/pathway-rules/resolve",
            data={
                "csrf_token": csrf,
                "trigger_type": "appointment.booked",
                "data": json.dumps(payload),
            },
        )
        assert answer.status_code == 200, answer.text
        html = answer.text
        assert re.search(r'Matched: <a href="/console/pathway-rules/rule_[^"]+">Video</a>', html)
        # The first rule's failed condition: the path it read, the value, what it expected.
        assert (
            "appointment.appointment_type_id is &#34;t_1&#34;; expected one of"
            " [&#34;type_vip_consultation&#34;]"
        ) in html
        assert "Its conditions hold, but an earlier rule decided." in html  # Everything
        assert "Disabled: not evaluated." in html
        # The result laid over the base config.
        assert "<td>Suggested priority</td><td>medium</td><td><strong>high</strong></td>" in html
        assert await _audit_actions(client, auth) == ["create"] * 4

    async def test_a_missing_field_and_bad_input(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_pathway_rule(client, auth)
        csrf = await sign_in(client, token)
        answer = await client.post(
            "/console/pathway-rules/resolve",
            data={"csrf_token": csrf, "trigger_type": "appointment.booked", "data": "{}"},
        )
        assert "No rule matched: the base config applies." in answer.text
        assert "the event has no appointment.appointment_type_id" in answer.text
        bad = await client.post(
            "/console/pathway-rules/resolve",
            data={"csrf_token": csrf, "trigger_type": "appointment.booked", "data": "[1,"},
        )
        assert bad.status_code == 400 and 'id="data-error"' in bad.text
        unknown = await client.post(
            "/console/pathway-rules/resolve",
            data={"csrf_token": csrf, "trigger_type": "nothing.happened", "data": "{}"},
        )
        assert unknown.status_code == 400
        assert 'id="trigger_type-error" role="alert">unknown trigger type' in unknown.text


class TestSpecialist:
    async def test_reads_and_explains_but_may_not_write(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        rule = await create_pathway_rule(client, auth)
        csrf = await sign_in(client, token, role="specialist")
        listed = await client.get("/console/pathway-rules")
        assert listed.status_code == 200 and "VIP bookings" in listed.text
        assert "New pathway rule" not in listed.text
        shown = await client.get(f"/console/pathway-rules/{rule['id']}")
        assert "Save pathway rule" not in shown.text and "Delete pathway rule" not in shown.text
        assert (await client.get("/console/pathway-rules/new")).status_code == 403
        explained = await client.post(
            "/console/pathway-rules/resolve",
            data={"csrf_token": csrf, "trigger_type": "appointment.booked", "data": "{}"},
        )
        assert explained.status_code == 200
        for path in (
            "/console/pathway-rules/new",
            f"/console/pathway-rules/{rule['id']}",
            f"/console/pathway-rules/{rule['id']}/delete",
        ):
            answer = await client.post(path, data=_form(csrf, priority="7"))
            assert answer.status_code == 403, path
        [kept] = await _rules(client, auth)
        assert kept["priority"] == 0
