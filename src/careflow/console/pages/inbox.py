"""``/console/inbox``: the organisation's episodes with the filters of ``GET /v1/episodes``;
an episode assigned, its priority changed, or closed, through the service behind
``PATCH /v1/episodes/{episode_id}`` (so the change, its checks and its audit entry are the
API's), its audit entry saying ``"via": "console"``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args
from urllib.parse import parse_qsl, urlencode

import pydantic
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from careflow.console.web import PREFIX, User, reader, redirect, render, writer
from careflow.errors import ValidationError, pydantic_details
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.pagination import PageParams
from careflow.pathways import episodes
from careflow.pathways.repository import EpisodeFilters
from careflow.pathways.schemas import EpisodePatch, InboxVisibility, Priority

router = APIRouter()

PAGE_SIZE = 25
WRITE = "PATCH /v1/episodes/{episode_id}"
STATUSES = ("open", "closed")
PRIORITIES: tuple[str, ...] = get_args(Priority)
VISIBILITIES: tuple[str, ...] = get_args(InboxVisibility)
#: The filters of ``GET /v1/episodes`` and the values each admits (None: any text, at most
#: this many characters).
FILTERS: dict[str, tuple[str, ...] | int] = {
    "patient_id": 128,
    "journey_type": 64,
    "status": STATUSES,
    "inbox_visibility": VISIBILITIES,
    "suggested_assignment": 200,
    "suggested_priority": PRIORITIES,
}


def read_filters(params: Mapping[str, str]) -> tuple[dict[str, str], int, dict[str, str]]:
    """The filters, the page and a message per filter the API would refuse (that filter
    is then left out). Without any parameter the inbox shows open episodes."""
    chosen: dict[str, str] = {}
    errors: dict[str, str] = {}
    if not params:
        return {"status": "open"}, 1, errors
    for name, allowed in FILTERS.items():
        value = (params.get(name) or "").strip()
        if not value:
            continue
        if isinstance(allowed, int) and len(value) > allowed:
            errors[name] = f"at most {allowed} characters"
        elif isinstance(allowed, tuple) and value not in allowed:
            errors[name] = "one of " + ", ".join(allowed)
        else:
            chosen[name] = value
    raw_page = params.get("page") or "1"
    page = int(raw_page) if raw_page.isascii() and raw_page.isdigit() else 1
    return chosen, max(1, min(page, 1_000_000)), errors


async def _inbox(
    request: Request,
    session: SessionDep,
    user: User,
    params: Mapping[str, str],
    *,
    errors: dict[str, str] | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    chosen, page, filter_errors = read_filters(params)
    paging = PageParams(page=page, limit=PAGE_SIZE)
    rows, total = await episodes.list_episodes(
        session, user.principal, EpisodeFilters(**chosen), limit=paging.limit, offset=paging.offset
    )

    def query(**changes: object) -> str:
        values: dict[str, object] = {"status": "", **chosen, "page": page, **changes}
        return urlencode(values)

    return render(
        request,
        "inbox.html",
        user,
        status_code=status_code,
        rows=rows,
        meta=paging.meta(total),
        chosen=chosen,
        query=query,
        here=query(),
        errors={**filter_errors, **(errors or {})},
        done=done,
        not_saved=bool(errors),
        statuses=STATUSES,
        priorities=PRIORITIES,
        visibilities=VISIBILITIES,
        can_write=user.can(WRITE),
    )


@router.get("/inbox")
async def inbox_page(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader("GET /v1/episodes")],
) -> HTMLResponse:
    params = dict(request.query_params)
    done = params.pop("done", None)
    if done is not None and not params:
        params = {"status": "open"}
    return await _inbox(request, session, user, params, done=(done or "")[:60] or None)


@router.get("/inbox/{episode_id}")
async def episode_in_inbox(
    request: Request,
    session: SessionDep,
    episode_id: str,
    user: Annotated[User, reader("GET /v1/episodes/{episode_id}")],
) -> Response:
    """An episode's place in the inbox (the journey and other pages link here): its
    patient's episodes, open or closed, at its row."""
    episode = await episodes.get_episode(session, user.principal, episode_id)
    query = urlencode({"patient_id": str(episode.patient_id)})
    return redirect(f"{PREFIX}/inbox?{query}#episode-{episode.id}", request)


async def _update(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: User,
    episode_id: str,
    changes: dict[str, Any],
    *,
    action: str,
    back: str,
) -> Response:
    now = clock.now()
    try:
        body = EpisodePatch(**changes)
    except pydantic.ValidationError as exc:
        details = pydantic_details(exc.errors())
        errors = {f"{d['field']}-{episode_id}": d["message"] for d in details}
        return await _inbox(
            request,
            session,
            user,
            dict(parse_qsl(back, keep_blank_values=True)),
            errors=errors,
            status_code=400,
        )
    try:
        episode = await episodes.update_episode(session, user.principal, episode_id, body, now)
    except ValidationError as exc:
        errors = {f"{d['field']}-{episode_id}": d["message"] for d in exc.details or []}
        return await _inbox(
            request,
            session,
            user,
            dict(parse_qsl(back, keep_blank_values=True)),
            errors=errors,
            status_code=400,
        )
    kept = [
        (k, v) for k, v in parse_qsl(back, keep_blank_values=True) if k in FILTERS or k == "page"
    ]
    target = f"{PREFIX}/inbox?" + urlencode([*kept, ("done", f"{action}-{episode.id}")])
    return redirect(target, request)


@router.post("/inbox/{episode_id}/assign")
async def assign(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    episode_id: str,
    user: Annotated[User, writer(WRITE)],
    assignee: Annotated[str, Form(max_length=400)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    # An empty field takes the assignee away; a blank one is refused, as by the API.
    value = assignee if assignee != "" else None
    return await _update(request, session, clock, user, episode_id, {"assignee": value},
                         action="assign", back=back)  # fmt: skip


@router.post("/inbox/{episode_id}/priority")
async def change_priority(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    episode_id: str,
    user: Annotated[User, writer(WRITE)],
    priority: Annotated[str, Form(max_length=20)] = "",
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    return await _update(request, session, clock, user, episode_id, {"priority": priority},
                         action="set_priority", back=back)  # fmt: skip


@router.post("/inbox/{episode_id}/close")
async def close(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    episode_id: str,
    user: Annotated[User, writer(WRITE)],
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    return await _update(request, session, clock, user, episode_id, {"status": "closed"},
                         action="close", back=back)  # fmt: skip
