"""What every console page shares: the templates, the signed-in user, the checks on writes,
the access matrix read off the API's own routes, and the page answers.

A page module declares a router whose GET routes take ``UserDep`` (redirected to the
sign-in page without a session) and whose POST routes take ``writer("POST /v1/…")``: the
CSRF token is checked, then the role, against the roles of the API operation the write
mirrors, so the console allows exactly what the API allows that role.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.routing import BaseRoute, Match

from careflow.auth import Principal, Role, route_roles
from careflow.console import service, signing
from careflow.console.signing import ConsoleSession
from careflow.errors import CareflowError, ForbiddenError
from careflow.kit.context import via_var
from careflow.kit.deps import ClockDep, SessionDep

PREFIX = "/console"
SESSION_COOKIE = "careflow_console"
LOGIN_COOKIE = "careflow_console_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
STATIC_DIR = Path(__file__).parent / "static"

# Every console answer: nothing from another host, no framing, nothing cached.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

templates = Environment(
    loader=PackageLoader("careflow.console", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """No session, or one that expired: the page answers with the sign-in page."""


# ---------------------------------------------------------------- access matrix


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        original = getattr(route, "original_router", None)  # FastAPI's included router
        if original is not None:
            yield from _api_routes(original.routes)


_PARAM = re.compile(r"\{[^}/]+\}")


def api_roles(app: FastAPI, operation: str) -> frozenset[Role]:
    """The roles the API admits to ``"METHOD /v1/path"`` (path parameters as ``{name}``);
    read off the API's own route, so the console and the API agree by construction."""
    cache: dict[str, frozenset[Role]] = app.state.__dict__.setdefault("console_roles", {})
    found = cache.get(operation)
    if found is not None:
        return found
    method, _, path = operation.partition(" ")
    scope = {"type": "http", "method": method, "path": _PARAM.sub("0", path), "root_path": ""}
    roles: frozenset[Role] | None = None
    for route in _api_routes(app.router.routes):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            roles = route_roles(route.dependant)
            break
    else:
        raise LookupError(f"no API operation {operation}")
    cache[operation] = roles = roles if roles is not None else frozenset(Role)
    return roles


# ---------------------------------------------------------------- the signed-in user


@dataclass
class User:
    """The console's caller: the principal of the session, and what it may do."""

    principal: Principal
    session: ConsoleSession
    csrf: str
    app: FastAPI = field(repr=False)

    @property
    def org_id(self) -> int:
        return self.principal.org_id

    @property
    def role(self) -> str:
        return self.principal.role.value

    def can(self, operation: str) -> bool:
        """``user.can("POST /v1/automations/rules")``: whether the API lets this role."""
        return self.principal.role in api_roles(self.app, operation)


async def keys_of(request: Request, session: SessionDep, clock: ClockDep) -> signing.Keys:
    kept = getattr(request.app.state, "console_keys", None)
    if isinstance(kept, signing.Keys):
        return kept
    keys = await service.keys(session, clock.now(), request.app.state.services)
    request.app.state.console_keys = keys
    return keys


KeysDep = Annotated[signing.Keys, Depends(keys_of)]


def session_of(request: Request, keys: signing.Keys, now: float) -> ConsoleSession | None:
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    claims = signing.unsign(keys.session, value, now=now)
    return ConsoleSession.from_claims(claims) if claims is not None else None


async def current_user(request: Request, keys: KeysDep, clock: ClockDep) -> AsyncIterator[User]:
    sess = session_of(request, keys, clock.now().timestamp())
    if sess is None:
        raise SignInRequired()
    try:
        role = Role(sess.role)
    except ValueError:
        raise SignInRequired() from None
    principal = Principal(org_id=sess.org_id, sub=sess.sub, role=role)
    request.state.principal = principal
    user = User(
        principal=principal,
        session=sess,
        csrf=signing.csrf_token(keys.csrf, sess.sid),
        app=request.app,
    )
    request.state.console_user = user  # for an error page's header
    # The audit entries of this request's writes say it came through the console; reset
    # after, as an in-process caller (tests' ASGITransport) shares the request's context.
    marked = via_var.set("console")
    try:
        yield user
    finally:
        via_var.reset(marked)


UserDep = Annotated[User, Depends(current_user)]


async def sent_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # kept on the request: the route reads it again
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def writer(operation: str | None) -> Any:
    """A POST route's dependency: a valid CSRF token (else 403), then a role the API admits
    to ``operation`` (else 403; None: any signed-in role). Returns the ``User``."""

    async def dependency(request: Request, user: UserDep, keys: KeysDep) -> User:
        if not signing.csrf_matches(keys.csrf, user.session.sid, await sent_csrf(request)):
            raise ForbiddenError("missing or invalid CSRF token")
        if operation is not None and not user.can(operation):
            raise ForbiddenError()
        return user

    return Depends(dependency)


def reader(operation: str) -> Any:
    """A GET route's dependency: a role the API admits to the read ``operation``."""

    async def dependency(user: UserDep) -> User:
        if not user.can(operation):
            raise ForbiddenError()
        return user

    return Depends(dependency)


# ---------------------------------------------------------------- answers

#: The navigation: (label, href, the API read it mirrors; None: every signed-in role).
NAV: tuple[tuple[str, str, str | None], ...] = (
    ("Overview", PREFIX, "GET /v1/automations/executions"),
    ("Rules", f"{PREFIX}/rules", "GET /v1/automations/rules"),
    ("Executions", f"{PREFIX}/executions", "GET /v1/automations/executions"),
    ("Inbox", f"{PREFIX}/inbox", "GET /v1/episodes"),
    ("Pathway rules", f"{PREFIX}/pathway-rules", "GET /v1/pathway-rules"),
    ("Jobs", f"{PREFIX}/jobs", "GET /v1/jobs"),
    ("Audit log", f"{PREFIX}/audit", "GET /v1/audit-log"),
)


def nav_for(user: User | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    shown = []
    for label, href, operation in NAV:
        try:
            if operation is None or user.can(operation):
                shown.append((label, href))
        except LookupError:
            continue  # a page whose API operation this build does not have
    return shown


def render(
    request: Request,
    template: str,
    user: User | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page (or, for an htmx request, the same template: fragments extend nothing)."""
    html = templates.get_template(template).render(
        request=request,
        user=user,
        nav=nav_for(user),
        path=request.url.path,
        csrf_field=CSRF_FIELD,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def redirect(url: str, request: Request | None = None) -> Response:
    """303 to ``url``; for an htmx request, ``HX-Redirect`` (htmx follows it itself)."""
    if request is not None and request.headers.get("HX-Request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url, **PAGE_HEADERS})
    return RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of this origin, never another host."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"{PREFIX}/login?next={quote(target, safe='')}", request)


def is_console_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_page(request: Request, status_code: int, message: str) -> Response:
    """The page a console request that failed answers with (the API answers JSON)."""
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed", 400: "Bad request"}
    return render(
        request,
        "error.html",
        getattr(request.state, "console_user", None),
        status_code=status_code,
        title=titles.get(status_code, "Something went wrong"),
        message=message,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request)


def page_problem(request: Request, exc: CareflowError | None, status_code: int,
                 message: str) -> Response | None:  # fmt: skip
    """For ``errors.install_error_handlers``: the HTML answer of a console path, else None."""
    if not is_console_path(request.url.path):
        return None
    if exc is not None and exc.status_code == 401:
        return sign_in_redirect(request)
    return error_page(request, status_code, message)
