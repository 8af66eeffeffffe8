"""/console/inbox: episodes with the filters of GET /v1/episodes; closing one in the browser;
assigning and changing priority through PATCH /v1/episodes' service, audited once, saying
it was done in the console."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Drain
from tests.console.conftest import Visit
from tests.console.signin import sign_in
from tests.fixtures.factories import PATIENT, booked, post_event

Auth = Callable[..., dict[str, str]]


async def open_episodes(client: httpx.AsyncClient, auth: Auth, drain: Drain, n: int) -> list[int]:
    """``n`` episodes of organisation 1, one per booked appointment, each its own patient."""
    for i in range(n):
        data = {**booked(50 + i, patient_id=100 + i), "patient": {**PATIENT, "id": 100 + i}}
        await post_event(client, auth, "appointment.booked", data)
    await drain()
    r = await client.get("/v1/episodes", params={"limit": 100}, headers=auth())
    ids = [e["id"] for e in r.json()["data"]]
    assert len(ids) == n, r.text
    return ids


async def episode(client: httpx.AsyncClient, auth: Auth, episode_id: int) -> dict[str, Any]:
    r = await client.get(f"/v1/episodes/{episode_id}", headers=auth())
    return r.json()["data"]  # type: ignore[no-any-return]


async def test_closing_an_episode_from_the_inbox(
    signed_in: Callable[..., Any], client: httpx.AsyncClient, auth: Auth, drain: Drain
) -> None:
    first, second = sorted(await open_episodes(client, auth, drain, 2))
    visit: Visit = await signed_in("specialist")
    await visit.goto("/console/inbox")
    await visit.page.get_by_label(f"Assignee of episode {first}").fill("usr_nurse")
    await visit.page.get_by_role("button", name=f"Assign episode {first}").click()
    await visit.page.locator("#done").wait_for()
    await visit.screenshot("inbox")
    await visit.page.get_by_role("button", name=f"Close episode {second}").click()
    await visit.page.wait_for_url("**done=close-*")
    # The inbox shows open episodes: the closed one has left it.
    assert await visit.page.locator(f"#episode-{second}").count() == 0
    assert await visit.page.locator(f"#episode-{first}").count() == 1
    assert (await episode(client, auth, second))["status"] == "closed"
    assert (await episode(client, auth, first))["assignee"] == "usr_nurse"


async def test_the_apis_filters_narrow_the_inbox(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, drain: Drain
) -> None:
    first, second = sorted(await open_episodes(client, auth, drain, 2))
    await client.patch(f"/v1/episodes/{second}", json={"status": "closed"}, headers=auth())
    await sign_in(client, token("specialist"))
    default = await client.get("/console/inbox")
    assert f'id="episode-{first}"' in default.text
    assert f'id="episode-{second}"' not in default.text
    closed = await client.get("/console/inbox", params={"status": "closed"})
    assert f'id="episode-{second}"' in closed.text and f'id="episode-{first}"' not in closed.text
    anyone = await client.get("/console/inbox", params={"status": "", "patient_id": "101"})
    ids = [e for e in (first, second) if f'id="episode-{e}"' in anyone.text]
    assert ids == [second]
    # The patient id links to the patient's journey.
    assert 'href="/console/patients/101"' in anyone.text
    none = await client.get("/console/inbox", params={"journey_type": "nothing-like-it"})
    assert 'id="no-episodes"' in none.text
    bad = await client.get("/console/inbox", params={"suggested_priority": "whenever"})
    assert bad.status_code == 200
    assert 'id="suggested_priority-error"' in bad.text and "one of low" in bad.text


async def test_assign_and_priority_go_through_the_apis_service_and_are_audited(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, drain: Drain
) -> None:
    [ep] = await open_episodes(client, auth, drain, 1)
    csrf = await sign_in(client, token("specialist", sub="usr_nurse"))
    back = "status=open&page=1"
    assigned = await client.post(
        f"/console/inbox/{ep}/assign",
        data={"csrf_token": csrf, "assignee": "usr_doc", "back": back},
    )
    assert assigned.status_code == 303
    assert assigned.headers["location"] == f"/console/inbox?status=open&page=1&done=assign-{ep}"
    raised = await client.post(
        f"/console/inbox/{ep}/priority",
        data={"csrf_token": csrf, "priority": "urgent", "back": back},
        headers={"HX-Request": "true"},
    )
    assert raised.headers["HX-Redirect"].endswith(f"done=set_priority-{ep}")
    after = await episode(client, auth, ep)
    assert (after["assignee"], after["priority"], after["status"]) == ("usr_doc", "urgent", "open")
    log = await client.get(
        "/v1/audit-log", params={"object_type": "episode", "actor": "usr_nurse"}, headers=auth()
    )
    entries = sorted(((e["action"], e["after"]) for e in log.json()["data"]), key=str)
    # One entry per action: the API operation's, saying it was made in the console.
    assert entries == [
        ("update", {"assignee": "usr_doc", "via": "console"}),
        ("update", {"priority": "urgent", "via": "console"}),
    ]
    unassigned = await client.post(
        f"/console/inbox/{ep}/assign", data={"csrf_token": csrf, "assignee": "", "back": back}
    )
    assert unassigned.status_code == 303
    assert (await episode(client, auth, ep))["assignee"] is None


async def test_a_refused_value_is_shown_beside_its_field(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, drain: Drain
) -> None:
    [ep] = await open_episodes(client, auth, drain, 1)
    start = await episode(client, auth, ep)
    csrf = await sign_in(client, token("admin"))
    blank = await client.post(
        f"/console/inbox/{ep}/assign",
        data={"csrf_token": csrf, "assignee": "   ", "back": "status=open&page=1"},
    )
    assert blank.status_code == 400
    assert f'id="assignee-{ep}-error"' in blank.text
    assert "must not be blank" in blank.text
    assert f'aria-describedby="assignee-{ep}-error"' in blank.text
    wrong = await client.post(
        f"/console/inbox/{ep}/priority", data={"csrf_token": csrf, "priority": "whenever"}
    )
    assert wrong.status_code == 400
    assert f'id="priority-{ep}-error"' in wrong.text
    assert await episode(client, auth, ep) == start


async def test_writes_need_csrf_a_staff_role_and_an_episode_of_the_organisation(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, drain: Drain
) -> None:
    [ep] = await open_episodes(client, auth, drain, 1)
    csrf = await sign_in(client, token("admin"))
    assert (await client.post(f"/console/inbox/{ep}/close")).status_code == 403
    other = await client.post("/console/inbox/999999/close", data={"csrf_token": csrf})
    assert other.status_code == 404
    client.cookies.clear()
    support_csrf = await sign_in(client, token("support"))
    assert (await client.get("/console/inbox")).status_code == 403
    refused = await client.post(f"/console/inbox/{ep}/close", data={"csrf_token": support_csrf})
    assert refused.status_code == 403
    assert (await episode(client, auth, ep))["status"] == "open"
    client.cookies.clear()
    await sign_in(client, token("admin", org=2))
    assert f'id="episode-{ep}"' not in (await client.get("/console/inbox")).text


async def test_an_episodes_link_leads_to_its_row_in_the_inbox(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, drain: Drain
) -> None:
    [ep] = await open_episodes(client, auth, drain, 1)
    await sign_in(client, token("specialist"))
    answer = await client.get(f"/console/inbox/{ep}")
    assert answer.status_code == 303
    target = answer.headers["location"]
    assert target.startswith("/console/inbox?patient_id=") and target.endswith(f"#episode-{ep}")
    page = await client.get(target.split("#")[0])
    assert f'id="episode-{ep}"' in page.text
    assert (await client.get("/console/inbox/999999")).status_code == 404
