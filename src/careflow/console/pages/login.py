"""Signing in and out: ``/console/login`` (a token, or a ``console-url`` ticket) and
``/console/logout``; the static files every page loads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, Response

from careflow.console import service, signing
from careflow.console.web import (
    LOGIN_COOKIE,
    PAGE_HEADERS,
    PREFIX,
    SESSION_COOKIE,
    STATIC_DIR,
    KeysDep,
    User,
    redirect,
    render,
    safe_next,
    session_of,
    writer,
)
from careflow.errors import ForbiddenError, NotFoundError, UnauthorizedError
from careflow.kit.deps import ClockDep, SessionDep

router = APIRouter()

LOGIN_COOKIE_SECONDS = 3600
STATIC_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
}


def _set_session(response: Response, request: Request, sess: signing.ConsoleSession,
                 keys: signing.Keys, now: float) -> None:  # fmt: skip
    response.set_cookie(
        SESSION_COOKIE,
        signing.sign(keys.session, sess.claims()),
        max_age=max(1, int(sess.expires - now)),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)


def _login_page(request: Request, keys: signing.Keys, next_url: str, *, error: str | None = None,
                status_code: int = 200) -> Response:  # fmt: skip
    nonce = signing.new_sid()
    response = render(
        request,
        "login.html",
        status_code=status_code,
        login_csrf=signing.csrf_token(keys.login, nonce),
        next=next_url,
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=LOGIN_COOKIE_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
async def login_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    keys: KeysDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
    ticket: Annotated[str | None, Query(max_length=4000)] = None,
) -> Response:
    now = clock.now()
    if ticket is not None:
        try:
            sess, principal = await service.redeem_ticket(session, keys, ticket, now)
        except UnauthorizedError as exc:
            return _login_page(request, keys, safe_next(next), error=exc.message, status_code=401)
        await service.record_sign_in(session, principal, method="link", now=now)
        response = redirect(safe_next(next))
        _set_session(response, request, sess, keys, now.timestamp())
        return response
    if session_of(request, keys, now.timestamp()) is not None:
        return redirect(safe_next(next))
    return _login_page(request, keys, safe_next(next))


@router.post("/login")
async def sign_in(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    keys: KeysDep,
    token: Annotated[str, Form(max_length=16384)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = PREFIX,
) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not signing.csrf_matches(keys.login, nonce, csrf_token):
        raise ForbiddenError("missing or invalid CSRF token")
    now = clock.now()
    if not token.strip():
        return _login_page(request, keys, safe_next(next), error="Enter a token.", status_code=400)
    try:
        sess, principal = await service.sign_in_with_token(
            request.app.state.token_verifier, token, now
        )
    except UnauthorizedError as exc:
        return _login_page(
            request, keys, safe_next(next), error=f"Not signed in: {exc.message}.", status_code=401
        )
    await service.record_sign_in(session, principal, method="token", now=now)
    response = redirect(safe_next(next))
    _set_session(response, request, sess, keys, now.timestamp())
    return response


@router.post("/logout")
async def sign_out(user: Annotated[User, writer(None)]) -> Response:
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return FileResponse(
        STATIC_DIR / name,
        media_type=media_type,
        headers={
            "Cache-Control": "public, max-age=3600",
            **{k: v for k, v in PAGE_HEADERS.items() if k != "Cache-Control"},
        },
    )
